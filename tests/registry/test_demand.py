"""Demand per chute, targets and the supply multiplier (pure, with a fake clock)."""

from __future__ import annotations

import pytest

from chutes_subnet.registry.demand import (
    ChuteDemand,
    DemandMeter,
    plan_targets,
    supply_multiplier,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_inflight_average_requests_tokens_and_refusals_over_the_window() -> None:
    clock = Clock()
    meter = DemandMeter(window=60, clock=clock)
    for _ in range(2):
        meter.started("a")
    clock.t += 30           # two requests in flight for 30 s
    meter.finished("a", tokens=10)
    meter.finished("a", tokens=5)
    meter.refused("a")
    clock.t += 30
    snap = meter.snapshot()["a"]
    assert (snap.requests, snap.tokens, snap.refusals) == (2, 15, 1)
    assert snap.inflight_avg == pytest.approx(60 / 60)  # 60 busy slot-seconds over 60 s
    clock.t += 200          # everything slides out of the window
    assert meter.snapshot()["a"] == ChuteDemand()


def test_targets_follow_demand_within_bounds() -> None:
    demand = {"a": ChuteDemand(inflight_avg=6.0), "b": ChuteDemand(inflight_avg=0.5),
              "c": ChuteDemand(refusals=3)}
    chutes = [("a", 1, 8), ("b", 1, 8), ("c", 0, 2), ("d", 0, 4)]
    t = plan_targets(demand, chutes, {"a": 2, "b": 3, "c": 2}, capacity_per_instance=4)
    assert (t["a"].target, t["b"].target, t["c"].target, t["d"].target) == (3, 1, 2, 0)
    assert t["a"].multiplier == pytest.approx(1 + 0.5 * (1 - 2 / 3))
    assert t["b"].multiplier == 0.5 and t["d"].multiplier == 1.0
    # the worked example of the module doc: one instance moves from b to a
    moved = plan_targets(demand, chutes, {"a": 3, "b": 2}, capacity_per_instance=4)
    assert moved["a"].multiplier == 1.0 and moved["b"].multiplier == 0.5
    with pytest.raises(ValueError):
        plan_targets(demand, chutes, {}, capacity_per_instance=0)


@pytest.mark.parametrize("current,target,expected", [
    (0, 1, 1.5), (1, 1, 1.0), (1, 2, 1.25), (2, 1, 0.5), (4, 2, 0.5), (3, 4, 1.125),
    (0, 0, 1.0), (1, 0, 0.5),
])
def test_supply_multiplier(current: int, target: int, expected: float) -> None:
    assert supply_multiplier(current, target) == pytest.approx(expected)
