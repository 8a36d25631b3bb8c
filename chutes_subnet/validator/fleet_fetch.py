"""The instances a uid fronts: its hotkey-signed list, fetched and checked once per round.

:func:`fetch_fleet` asks the uid's published endpoint for ``GET /fleet``
(:mod:`chutes_subnet.wire.fleet_signing`), with the round's timeouts and a bounded read:

* 404 (a miner that serves no list): the uid's one instance is its published endpoint;
* 200 with a list signed by the uid's hotkey for this subnet, still valid: its
  instances, in the operator's order, at most ``limit`` of them (the rest are not
  evaluated this round);
* anything else (unreachable, timeout, another status, malformed, unsigned, another
  hotkey's list, expired, oversized): :class:`~.failures.EvaluationFailure` with a
  ``fleet:<code>`` reason; the uid scores 0 this round (fail closed).

Listing is no proof: each instance is attested on its own, and its quote binds the
hotkey, so an instance of another hotkey listed here fails its own challenge.

A :class:`FleetCache` keeps a verified list until half its validity has passed, and
a "no list" (404) answer for :data:`NO_LIST_RECHECK_SECONDS`, so a round over
thousands of uids does not fetch and verify every list every round. Refusals are
never cached: the next round fetches again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from chutes_subnet.chain import Neuron
from chutes_subnet.errors import FleetError
from chutes_subnet.wire.fleet_signing import verify_fleet
from chutes_subnet.wire.protocol import FLEET_PATH, MAX_FLEET_BYTES

from .attestor import miner_url
from .failures import EvaluationFailure, from_http_error, read_bounded

__all__ = ["NO_LIST_RECHECK_SECONDS", "FleetCache", "FleetMember", "fetch_fleet"]

#: seconds a miner's "no list" (404) answer is reused before asking again
NO_LIST_RECHECK_SECONDS = 300.0


@dataclass(frozen=True)
class FleetMember:
    """One instance to evaluate: its base URL, and the id the list pins it to (if any)."""

    url: str
    instance_id: str | None = None


class FleetCache:
    """Per uid: the last verified list (or "no list") of its hotkey at its axon, until
    its freshness ends. One entry per uid."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[str, str, tuple[FleetMember, ...], float]] = {}

    def get(self, neuron: Neuron, now: float) -> tuple[FleetMember, ...] | None:
        entry = self._entries.get(neuron.uid)
        if entry is None or entry[:2] != (neuron.hotkey, neuron.axon) or now >= entry[3]:
            return None
        return entry[2]

    def put(self, neuron: Neuron, members: tuple[FleetMember, ...], fresh_until: float) -> None:
        self._entries[neuron.uid] = (neuron.hotkey, neuron.axon or "", members, fresh_until)

    def forget(self, uid: int) -> None:
        self._entries.pop(uid, None)


async def fetch_fleet(http: httpx.AsyncClient, neuron: Neuron, *, netuid: int, limit: int,
                      clock: Callable[[], float] = time.time,
                      cache: FleetCache | None = None) -> tuple[FleetMember, ...]:
    """The instances ``neuron`` fronts (see module doc); raises ``EvaluationFailure``."""
    if not neuron.axon:
        raise EvaluationFailure("no_axon", "the hotkey has not published an endpoint")
    now = clock()
    cached = cache.get(neuron, now) if cache is not None else None
    if cached is not None:
        return cached[:max(1, limit)]
    if cache is not None:
        cache.forget(neuron.uid)
    axon_url = miner_url(neuron.axon)
    try:
        async with http.stream("GET", axon_url + FLEET_PATH) as resp:
            if resp.status_code == 404:
                alone = (FleetMember(axon_url),)
                if cache is not None:
                    cache.put(neuron, alone, now + NO_LIST_RECHECK_SECONDS)
                return alone
            if resp.status_code != 200:
                raise EvaluationFailure("fleet:bad_status",
                                        f"fleet: miner answered HTTP {resp.status_code}")
            raw = await read_bounded(resp, MAX_FLEET_BYTES, "fleet")
    except httpx.HTTPError as exc:
        raise from_http_error(exc, "fleet") from exc
    except EvaluationFailure as failure:
        if failure.reason == "bad_response":  # the bounded read's refusal
            raise EvaluationFailure("fleet:too_large", failure.detail) from None
        raise
    try:
        fleet = verify_fleet(raw, hotkey=neuron.hotkey, netuid=netuid, now=now)
    except FleetError as exc:
        raise EvaluationFailure(f"fleet:{exc.code}", f"fleet: {exc}") from None
    members = tuple(FleetMember(i.url, i.instance_id) for i in fleet.instances)
    if cache is not None:  # fresh for half the list's remaining validity
        cache.put(neuron, members, now + (fleet.expires_at - now) / 2)
    return members[:max(1, limit)]
