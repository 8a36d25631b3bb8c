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


# --- where the scaler reads load: the private metrics port, not the public /health ----

@pytest.mark.parametrize("in_flight,capacity,bucket", [
    (0, 4, "low"), (1, 4, "low"), (2, 4, "high"), (3, 4, "high"), (4, 4, "full"),
    (0, 1, "low"), (1, 1, "full"), (9, 20, "low"), (10, 20, "high"),
])
def test_load_bucket(in_flight: int, capacity: int, bucket: str) -> None:
    from chutes_subnet.miner.state import load_bucket

    assert load_bucket(in_flight, capacity) == bucket


@pytest.mark.slow
def test_health_is_coarse_and_the_scaler_reads_the_private_metrics_port(tmp_path) -> None:
    """Anonymous ``/health`` cannot count requests one by one (three busy slots of four
    and two busy slots both read "high"); ``chutes scale`` gets the exact utilisation from
    the instance's metrics port and still plans from it."""
    import httpx

    from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
    from chutes_subnet.chutes_cli import _utilization
    from chutes_subnet.inference import make_backend
    from chutes_subnet.miner import MinerConfig, create_app
    from chutes_subnet.miner.app import create_metrics_app
    from tests.servers import UvicornThread, free_port

    cfg = MinerConfig(tee="simulated", max_concurrency=4, metrics_port=free_port())
    app = create_app(cfg, hotkey_ss58="5" + "F" * 47, backend=make_backend("embedded"),
                     provider=SimulatedProvider(gpu_count=1), gate=None)
    state = app.state.miner
    with UvicornThread(app) as axon, UvicornThread(create_metrics_app(state),
                                                   port=cfg.metrics_port) as private:
        assert httpx.get(axon.url + "/metrics").status_code == 404  # not on the public port
        seen = []
        for _ in range(3):  # what an invoke does for each request it holds
            assert state.limiter.try_acquire()
            state.metrics.in_flight.inc()
            health = httpx.get(axon.url + "/health").json()
            assert "in_flight" not in health and "capacity" not in health
            seen.append(health["load"])
            running, load = _utilization([private.url])
            assert running == 1 and load == pytest.approx(len(seen) / 4)
        assert seen == ["low", "high", "high"]
        assert _utilization([axon.url]) == (0, 0.0)  # public port: no exact source, not counted
        def plan() -> list[tuple[str, str]]:
            fleet = {"c": FleetChute("c", *_utilization([private.url]))}
            return kinds(plan_scaling({"c": (1, 1)}, fleet, free_slots=1))

        assert plan() == []  # 75 % busy: inside the hysteresis band
        assert state.limiter.try_acquire()
        state.metrics.in_flight.inc()
        assert httpx.get(axon.url + "/health").json()["load"] == "full"
        assert plan() == [("start", "c")]  # all slots busy: one more instance
