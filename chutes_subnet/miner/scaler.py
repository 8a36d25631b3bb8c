"""Miner-side scaler: move capacity to the chutes users need, with hysteresis.

Each tick reads the published per-chute targets (``GET /v1/chutes/serving``, or
``/v1/chutes`` with an API key for private chutes the miner is allowed to serve) and
the miner's own instances (their ``/health``: ``in_flight`` / ``capacity``), then
:func:`plan_scaling` decides, per chute this machine can run:

* **start** one instance when the chute is under target, or when the miner's own
  instances of it are busier than ``up_utilization`` (0.75) — and a slot is free, or
  one can be freed from an over-supplied chute that is idle;
* **stop** one instance when the miner's instances of it are below
  ``down_utilization`` (0.25) and the chute is over target.

Why these numbers: a batch-limited engine's queueing delay climbs steeply past ~75 %
utilisation, and a cold start (model load + attestation) takes minutes, so capacity
is added before saturation. Below 25 %, removing one of ``n >= 2`` instances leaves
the others at most ``0.25 * n / (n - 1) <= 0.5`` busy — under the 0.75 start line, so
a stop never triggers a start (no oscillation). A chute is not touched again for
``cooldown_s`` (120 s) after a change: longer than a cold start plus the gateway's
demand buckets catching up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Action", "FleetChute", "ScalePolicy", "plan_scaling"]


@dataclass(frozen=True)
class ScalePolicy:
    up_utilization: float = 0.75
    down_utilization: float = 0.25
    cooldown_s: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.down_utilization < self.up_utilization <= 1:
            raise ValueError("need 0 <= down_utilization < up_utilization <= 1")


@dataclass(frozen=True)
class FleetChute:
    """What this miner runs of one chute."""

    chute_id: str
    running: int  #: instances of it this miner runs
    utilization: float  #: their mean in_flight / capacity (0 when none run)
    can_run: bool = True  #: this machine's hardware fits the chute


@dataclass(frozen=True)
class Action:
    kind: str  #: "start" or "stop"
    chute_id: str
    reason: str


def plan_scaling(targets: Mapping[str, tuple[int, int]], fleet: Mapping[str, FleetChute], *,
                 free_slots: int, policy: ScalePolicy = ScalePolicy(),
                 last_change: Mapping[str, float] | None = None,
                 now: float = 0.0) -> list[Action]:
    """This tick's actions. ``targets``: chute id -> (target, current instances subnet-wide)."""
    changed = last_change or {}

    def cooling(chute_id: str) -> bool:
        return now - changed.get(chute_id, -1e18) < policy.cooldown_s

    def deficit(chute_id: str) -> int:
        target, current = targets.get(chute_id, (0, 0))
        return target - current

    actions: list[Action] = []
    # stops first: idle instances of over-supplied chutes free slots for the rest
    stoppable = []
    for c in fleet.values():
        if c.running and not cooling(c.chute_id) and c.utilization < policy.down_utilization \
                and deficit(c.chute_id) < 0:
            stoppable.append(c)
    wanted = []
    for c in fleet.values():
        if not c.can_run or cooling(c.chute_id):
            continue
        if deficit(c.chute_id) > 0:
            wanted.append((deficit(c.chute_id), c, "under target"))
        elif c.running and c.utilization > policy.up_utilization:
            wanted.append((0, c, f"own instances {c.utilization:.0%} busy"))
    wanted.sort(key=lambda w: (-w[0], w[1].chute_id))
    slots = free_slots
    for c in sorted(stoppable, key=lambda c: (deficit(c.chute_id), c.chute_id)):
        actions.append(Action("stop", c.chute_id,
                              f"over target ({-deficit(c.chute_id)} extra), "
                              f"{c.utilization:.0%} busy"))
        slots += 1
    for _, c, reason in wanted:
        if slots <= 0:
            break
        actions.append(Action("start", c.chute_id, reason))
        slots -= 1
    return actions
