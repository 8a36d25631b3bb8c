"""The miner-side scaler's decisions (pure): follow targets, hysteresis, cooldown."""

from __future__ import annotations

import pytest

from chutes_subnet.miner.scaler import FleetChute, ScalePolicy, plan_scaling


def kinds(actions) -> list[tuple[str, str]]:
    return [(a.kind, a.chute_id) for a in actions]


def test_starts_the_most_under_supplied_chute_it_can_run() -> None:
    targets = {"a": (3, 1), "b": (2, 1), "c": (5, 0)}
    fleet = {"a": FleetChute("a", 1, 0.5), "b": FleetChute("b", 0, 0.0),
             "c": FleetChute("c", 0, 0.0, can_run=False)}
    assert kinds(plan_scaling(targets, fleet, free_slots=1)) == [("start", "a")]
    assert kinds(plan_scaling(targets, fleet, free_slots=2)) == [("start", "a"), ("start", "b")]
    assert plan_scaling(targets, fleet, free_slots=0) == []


def test_an_idle_over_supplied_chute_frees_its_slot_for_an_under_supplied_one() -> None:
    targets = {"busy": (3, 1), "idle": (1, 3)}
    fleet = {"busy": FleetChute("busy", 1, 0.9), "idle": FleetChute("idle", 1, 0.1)}
    assert kinds(plan_scaling(targets, fleet, free_slots=0)) == [("stop", "idle"),
                                                                 ("start", "busy")]


def test_hysteresis_band_and_own_utilisation() -> None:
    at_target = {"a": (2, 2)}
    for load, expected in ((0.9, [("start", "a")]), (0.5, []), (0.1, [])):
        # at target: only the miner's own saturation starts one; nothing stops one
        assert kinds(plan_scaling(at_target, {"a": FleetChute("a", 2, load)},
                                  free_slots=1)) == expected
    over = {"a": (1, 3)}
    assert kinds(plan_scaling(over, {"a": FleetChute("a", 2, 0.2)}, free_slots=0)) == [
        ("stop", "a")]
    assert plan_scaling(over, {"a": FleetChute("a", 2, 0.3)}, free_slots=0) == []
    # the documented guarantee: after a stop at < 0.25 the rest stay under 0.75
    for n in range(2, 50):
        assert 0.25 * n / (n - 1) < ScalePolicy().up_utilization


def test_cooldown_holds_a_chute_still() -> None:
    targets = {"a": (3, 1)}
    fleet = {"a": FleetChute("a", 1, 0.9)}
    assert plan_scaling(targets, fleet, free_slots=1, last_change={"a": 100.0}, now=150.0) == []
    assert kinds(plan_scaling(targets, fleet, free_slots=1, last_change={"a": 100.0},
                              now=221.0)) == [("start", "a")]
    with pytest.raises(ValueError):
        ScalePolicy(up_utilization=0.2, down_utilization=0.3)
