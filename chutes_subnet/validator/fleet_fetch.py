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

__all__ = ["FleetMember", "fetch_fleet"]


@dataclass(frozen=True)
class FleetMember:
    """One instance to evaluate: its base URL, and the id the list pins it to (if any)."""

    url: str
    instance_id: str | None = None


async def fetch_fleet(http: httpx.AsyncClient, neuron: Neuron, *, netuid: int, limit: int,
                      clock: Callable[[], float] = time.time) -> tuple[FleetMember, ...]:
    """The instances ``neuron`` fronts (see module doc); raises ``EvaluationFailure``."""
    if not neuron.axon:
        raise EvaluationFailure("no_axon", "the hotkey has not published an endpoint")
    axon_url = miner_url(neuron.axon)
    try:
        async with http.stream("GET", axon_url + FLEET_PATH) as resp:
            if resp.status_code == 404:
                return (FleetMember(axon_url),)
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
        fleet = verify_fleet(raw, hotkey=neuron.hotkey, netuid=netuid, now=clock())
    except FleetError as exc:
        raise EvaluationFailure(f"fleet:{exc.code}", f"fleet: {exc}") from None
    return tuple(FleetMember(i.url, i.instance_id) for i in fleet.instances[:max(1, limit)])
