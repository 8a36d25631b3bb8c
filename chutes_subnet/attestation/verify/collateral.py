"""DCAP collateral as the verifier takes it: a source protocol and validity windows.

A :class:`CollateralSource` returns dcap-qvl collateral for a quote at a time; the
validator injects one that fetches and caches
(:class:`chutes_subnet.attestation.fetch.pccs.PccsCollateralSource`), tests and
air-gapped validators use :class:`StaticCollateralSource`. :func:`collateral_window`
and :func:`collateral_key` are the pure parts any cache needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import dcap_qvl
from cryptography import x509

from chutes_subnet.errors import CollateralError

from .dcap import quote_fmspc

__all__ = [
    "CollateralSource",
    "StaticCollateralSource",
    "collateral_window",
    "collateral_key",
]


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
