"""``GET /fleet``: the signed list of instances this miner's hotkey fronts.

The instance whose endpoint is published on chain lists itself first, then the
sibling instances the operator configured (``--fleet.instances``). Siblings run the
same miner with the same hotkey on their own TD / GPU set and do not publish an axon
(``--axon.no_serve``); validators attest, benchmark and score each listed instance
on its own, and gateways route to each directly. A miner without siblings serves a
list of one: itself.

The list is signed by the hotkey (:mod:`chutes_subnet.wire.fleet_signing`) with a short
validity and re-signed when half of it has passed; the signed bytes are cached, so a
flood of requests costs no signatures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from chutes_subnet.wire.fleet_signing import fleet_json, sign_fleet
from chutes_subnet.wire.messages import FleetInstance
from chutes_subnet.wire.protocol import MAX_FLEET_INSTANCES, canonical_instance_url

__all__ = ["DEFAULT_FLEET_TTL", "FleetPublisher", "fleet_entries"]

#: seconds a served list is valid (re-signed after half of it)
DEFAULT_FLEET_TTL = 600


def fleet_entries(own_url: str, own_instance_id: str,
                  siblings: Sequence[str]) -> list[FleetInstance]:
    """This instance (with its id) first, then each sibling URL once.

    ``ValueError`` names a malformed URL, a duplicate or a list over
    :data:`MAX_FLEET_INSTANCES`.
    """
    own = canonical_instance_url(own_url)
    entries = [FleetInstance(url=own, instance_id=own_instance_id)]
    seen = {own}
    for raw in siblings:
        url = canonical_instance_url(raw)
        if url in seen:
            raise ValueError(f"instance URL {url} is listed twice")
        seen.add(url)
        entries.append(FleetInstance(url=url))
    if len(entries) > MAX_FLEET_INSTANCES:
        raise ValueError(f"a hotkey may list at most {MAX_FLEET_INSTANCES} instances "
                         f"(this one and {MAX_FLEET_INSTANCES - 1} siblings)")
    return entries


class FleetPublisher:
    """Serves the signed instance list (a Starlette endpoint)."""

    def __init__(self, signer: Any, *, netuid: int, entries: Sequence[FleetInstance],
                 ttl: int = DEFAULT_FLEET_TTL, clock: Callable[[], float] = time.time) -> None:
        self._signer = signer
        self.netuid = int(netuid)
        self.entries = tuple(entries)
        self.ttl = int(ttl)
        self._clock = clock
        self._lock = threading.Lock()
        self._body = b""
        self._refresh_at = 0.0
        #: the hotkey (ss58) the list is signed by
        self.hotkey = ""
        self.current()  # sign once now: a bad signer or list fails at start

    def current(self) -> bytes:
        """The signed list (JSON bytes), re-signed after half its validity."""
        now = self._clock()
        with self._lock:
            if now >= self._refresh_at:
                signed = sign_fleet(self._signer, netuid=self.netuid, instances=self.entries,
                                    issued_at=int(now), ttl_seconds=self.ttl)
                self._body, self.hotkey = fleet_json(signed), signed.fleet.hotkey
                self._refresh_at = now + self.ttl / 2
            return self._body

    async def endpoint(self, _request: Request) -> Response:
        """The Starlette endpoint: the current signed list, never cached downstream."""
        return Response(self.current(), media_type="application/json",
                        headers={"Cache-Control": "no-store"})
