"""Intel DCAP collateral the gateway caches for clients (``POST /e2e/collateral``).

Collateral (TCB info, QE identity, CRLs, issuer chains) is signed by Intel, so any
relay is safe: clients verify it with DCAP against Intel's root. The gateway does not
verify it and stays keyless (this module imports dcap-qvl only, no X.509 or crypto
library). Each platform's collateral (``FMSPC-CA`` of the quote) is kept until the
earliest ``nextUpdate`` of its TCB info and QE identity, and at most ``max_age``
seconds so CRL updates propagate; then it is fetched again from the PCCS / Intel PCS.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import dcap_qvl

from chutes_subnet.errors import CollateralError

__all__ = ["GatewayCollateral", "PcsCollateralCache", "StaticCollateral", "platform_key"]

#: ``(base_url, quote) -> collateral JSON text``
Fetch = Callable[[str, bytes], Awaitable[str]]


class GatewayCollateral(Protocol):
    async def get_json(self, quote: bytes, now: int) -> str:
        """Collateral JSON for ``quote``'s platform; raises ``CollateralError``."""
        ...


def platform_key(quote: bytes) -> str:
    """``<FMSPC>-<ca>`` of a quote; raises ``CollateralError`` for anything else."""
    try:
        parsed = dcap_qvl.parse_quote(bytes(quote))
        key = f"{str(parsed.fmspc()).upper()}-{parsed.ca()}"
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CollateralError("cannot read FMSPC/CA from the quote") from exc
    if not re.fullmatch(r"[0-9A-F]{12}-[a-z]{1,16}", key):
        raise CollateralError("unexpected FMSPC/CA in quote")
    return key


def _next_update(text: str) -> int:
    """Earliest ``nextUpdate`` of the TCB info and QE identity documents (Unix s)."""
    try:
        doc = json.loads(text)
        ends = [int(datetime.fromisoformat(json.loads(doc[k])["nextUpdate"]).timestamp())
                for k in ("tcb_info", "qe_identity")]
    except (ValueError, KeyError, TypeError) as exc:
        raise CollateralError("collateral JSON is malformed") from exc
    return min(ends)


async def _fetch_with_dcap_qvl(base_url: str, quote: bytes) -> str:
    try:
        collateral = await dcap_qvl.get_collateral(base_url, quote)
        return str(collateral.to_json())
    except (ValueError, RuntimeError, OSError) as exc:
        raise CollateralError("collateral fetch from PCCS/PCS failed") from exc


class StaticCollateral:
    """One fixed collateral document for every quote (tests, air-gapped gateways)."""

    def __init__(self, text: str) -> None:
        _next_update(text)
        self._text = text

    async def get_json(self, quote: bytes, now: int) -> str:
        platform_key(quote)
        return self._text


class PcsCollateralCache:
    """Fetch from a PCCS / Intel PCS, keep per platform (module doc), bounded."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, max_age: int = 12 * 3600,
                 max_entries: int = 256, fetch: Fetch | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_age, self._max = timeout, max_age, max_entries
        self._fetch = fetch or _fetch_with_dcap_qvl
        self._entries: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get_json(self, quote: bytes, now: int) -> str:
        key = platform_key(quote)
        async with self._lock:  # one fetch at a time: a cold platform is fetched once
            hit = self._entries.get(key)
            if hit is not None and now < hit[1]:
                return hit[0]
            try:
                text = await asyncio.wait_for(self._fetch(self.base_url, bytes(quote)),
                                              self.timeout)
            except TimeoutError as exc:
                raise CollateralError("collateral fetch from PCCS/PCS timed out") from exc
            until = min(_next_update(text), now + self.max_age)
            if until <= now:
                raise CollateralError("the PCCS/PCS served expired collateral")
            self._entries[key] = (text, until)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return text
