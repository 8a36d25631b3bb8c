"""DCAP collateral sources: the verifier's only I/O.

A :class:`CollateralSource` returns dcap-qvl collateral for a quote at a time.
:class:`PccsCollateralSource` fetches from a PCCS or Intel PCS and keeps an on-disk
cache keyed by FMSPC and CA; an entry is served while ``now`` is inside its validity
window (the earliest ``nextUpdate`` of TCB info, QE identity and both CRLs) and
refetched afterwards. :class:`StaticCollateralSource` serves fixed collateral
(tests, air-gapped validators).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import dcap_qvl
from cryptography import x509

from chutes_subnet.errors import CollateralError

from .dcap import collateral_from_json, quote_fmspc

__all__ = [
    "CollateralSource",
    "StaticCollateralSource",
    "PccsCollateralSource",
    "collateral_window",
    "collateral_key",
]

Fetcher = Callable[[str, bytes, float], Any]


class CollateralSource(Protocol):
    def get(self, quote: bytes, now: int) -> Any:
        """dcap-qvl collateral for ``quote`` valid at ``now``; raises ``CollateralError``."""
        ...


def _ts(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


def _crl_window(der: bytes) -> tuple[int, int]:
    crl = x509.load_der_x509_crl(bytes(der))
    nxt = crl.next_update_utc
    if nxt is None:
        raise ValueError("CRL without nextUpdate")
    return int(crl.last_update_utc.timestamp()), int(nxt.timestamp())


def collateral_window(collateral: Any) -> tuple[int, int]:
    """(latest issue time, earliest next update) over every collateral item, Unix s."""
    try:
        starts, ends = [], []
        for doc in (collateral.tcb_info, collateral.qe_identity):
            body = json.loads(doc)
            body = body.get("tcbInfo", body.get("enclaveIdentity", body))
            starts.append(_ts(body["issueDate"]))
            ends.append(_ts(body["nextUpdate"]))
        for crl in (collateral.pck_crl, collateral.root_ca_crl):
            s, e = _crl_window(crl)
            starts.append(s)
            ends.append(e)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CollateralError("collateral validity window is unreadable") from exc
    return max(starts), min(ends)


def collateral_key(quote: bytes) -> str:
    """``<FMSPC>-<ca>`` of a quote: the platform collateral it needs (cache key)."""
    try:
        ca = str(dcap_qvl.parse_quote(bytes(quote)).ca())
    except (ValueError, RuntimeError) as exc:
        raise CollateralError("cannot read the PCK CA from the quote") from exc
    key = f"{quote_fmspc(quote)}-{ca}"
    if not re.fullmatch(r"[0-9A-F]{12}-[a-z]{1,16}", key):
        raise CollateralError("unexpected FMSPC/CA in quote")
    return key


class StaticCollateralSource:
    """Fixed collateral: one object for every quote, or a mapping FMSPC -> collateral."""

    def __init__(self, collateral: Any | Mapping[str, Any]) -> None:
        self._single = None if isinstance(collateral, Mapping) else collateral
        self._by_fmspc = (
            {k.upper(): v for k, v in collateral.items()} if isinstance(collateral, Mapping) else {}
        )

    def get(self, quote: bytes, now: int) -> Any:
        if self._single is not None:
            return self._single
        found = self._by_fmspc.get(quote_fmspc(quote))
        if found is None:
            raise CollateralError("no collateral configured for this platform (FMSPC)")
        return found


def _fetch_with_dcap_qvl(base_url: str, quote: bytes, timeout: float) -> Any:
    async def run() -> Any:
        return await asyncio.wait_for(dcap_qvl.get_collateral(base_url, quote), timeout)

    try:
        return asyncio.run(run())
    except (TimeoutError, ValueError, RuntimeError, OSError) as exc:
        raise CollateralError("collateral fetch from PCCS/PCS failed") from exc


class PccsCollateralSource:
    """Fetch collateral from ``base_url`` (PCCS or Intel PCS) with an on-disk cache.

    Cache files are ``<cache_dir>/<FMSPC>-<ca>.json``; entries outside their validity
    window at ``now`` are refetched. ``fetch`` is injectable (default: dcap-qvl's own
    HTTP client, bounded by ``timeout`` seconds).
    """

    def __init__(
        self,
        base_url: str,
        cache_dir: str | Path,
        timeout: float = 10,
        *,
        fetch: Fetcher | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self._fetch = fetch or _fetch_with_dcap_qvl
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[Any, int, int]] = {}

    def _load_disk(self, key: str) -> tuple[Any, int, int] | None:
        path = self.cache_dir / f"{key}.json"
        try:
            collateral = collateral_from_json(path.read_text(encoding="utf-8"))
        except (OSError, CollateralError):
            return None
        start, end = collateral_window(collateral)
        return collateral, start, end

    def _store_disk(self, key: str, collateral: Any) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(collateral.to_json(), encoding="utf-8")
        os.replace(tmp, self.cache_dir / f"{key}.json")

    def get(self, quote: bytes, now: int) -> Any:
        key = collateral_key(quote)
        with self._lock:
            for entry in (self._memory.get(key), self._load_disk(key)):
                if entry is not None and entry[1] <= now < entry[2]:
                    self._memory[key] = entry
                    return entry[0]
            collateral = self._fetch(self.base_url, bytes(quote), self.timeout)
            start, end = collateral_window(collateral)
            if not start <= now < end:
                raise CollateralError("fetched collateral is not valid at the verification time")
            self._memory[key] = (collateral, start, end)
            self._store_disk(key, collateral)
            return collateral
