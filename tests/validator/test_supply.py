"""Chutes on the validator (pure): registered, live chutes on the hardware they need;
round scores scaled by the chute's supply multiplier."""

from __future__ import annotations

import pytest

from chutes_subnet.registry.chutes import Chute, parse_chute_spec
from chutes_subnet.registry.demand import Target
from chutes_subnet.validator.failures import EvaluationFailure
from chutes_subnet.validator.results import AttestationSummary, MinerResult
from chutes_subnet.validator.supply import apply_supply, check_served_chute
from tests.chute_fixtures import chute_dict


class Catalog(dict):
    pass


def _chute(name: str, *, retired: bool = False, gpus: int = 0, model: str = "any") -> Chute:
    spec = parse_chute_spec(chute_dict(name, hardware={"gpu_model": model, "gpu_count": gpus}))
    return Chute(spec, "k_owner", 1, retired, 0.0, 0.0)


def _summary(chute_id: str, gpu_model: str | None = "H100", gpus: int = 8) -> AttestationSummary:
    return AttestationSummary(True, "iid", chute_id, "m", "k", True, None, None, gpu_model, gpus,
                              (), 0.0, 1.0)


def test_registered_live_chutes_on_enough_hardware_pass() -> None:
    ok = _chute("acme/ok", gpus=2, model="H100")
    catalog = Catalog({ok.chute_id: ok})
    check_served_chute(catalog, ok.chute_id, _summary(ok.chute_id))


@pytest.mark.parametrize("chute,summary,reason", [
    (None, None, "attestation:unregistered_chute"),
    (_chute("acme/old", retired=True), None, "attestation:retired_chute"),
    (_chute("acme/big", gpus=8, model="H100"), ("H100", 4), "attestation:hardware_mismatch"),
    (_chute("acme/b200", gpus=1, model="B200"), ("H100", 8), "attestation:hardware_mismatch"),
    (_chute("acme/gpu", gpus=1), (None, 0), "attestation:hardware_mismatch"),
])
def test_refusals(chute, summary, reason) -> None:
    cid = chute.chute_id if chute else "8f28075d-0000-5000-8000-000000000000"
    catalog = Catalog({cid: chute} if chute else {})
    with pytest.raises(EvaluationFailure) as exc:
        check_served_chute(catalog, cid, _summary(cid, *summary) if summary else None)
    assert exc.value.reason == reason and exc.value.detail


def test_round_scores_scale_with_the_chute_multiplier() -> None:
    def result(uid: int, chute_id: str, ok: bool = True) -> MinerResult:
        return MinerResult(uid, f"h{uid}", "c", "a", True, None if ok else "timeout",
                           attestation=_summary(chute_id))

    results = [result(1, "a"), result(2, "b"), result(3, "c"), result(4, "a", ok=False)]
    targets = {"a": Target(3, 1, 1.5), "b": Target(1, 3, 0.5)}
    out = apply_supply({1: 0.8, 2: 0.8, 3: 0.8, 4: 0.0}, results, targets)
    assert out == {1: pytest.approx(1.2), 2: pytest.approx(0.4), 3: 0.8, 4: 0.0}
