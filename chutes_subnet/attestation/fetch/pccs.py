"""DCAP collateral fetched from a PCCS or Intel PCS, with an on-disk cache.

:class:`PccsCollateralSource` (a :class:`~chutes_subnet.attestation.verify.collateral.CollateralSource`)
keeps entries keyed by FMSPC and CA; an entry is served while ``now`` is inside its
validity window (the earliest ``nextUpdate`` of TCB info, QE identity and both CRLs)
and refetched afterwards.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dcap_qvl

from chutes_subnet.attestation.verify.collateral import collateral_key, collateral_window
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.errors import CollateralError

__all__ = ["PccsCollateralSource"]

Fetcher = Callable[[str, bytes, float], Any]


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
