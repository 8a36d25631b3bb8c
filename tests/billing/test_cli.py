"""The billing commands as an operator runs them: exact output, one-line errors."""

from __future__ import annotations

import json

import pytest

from chutes_subnet.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(tmp_path / "home"))
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_credit_balance_plan_report(home, capsys) -> None:
    assert run(capsys, "billing", "credit", "k1", "--rao", "1500000000", "--ref", "wire-7")[1] \
        == "credited\n"
    code, out, _ = run(capsys, "billing", "credit", "k1", "--rao", "1500000000", "--ref", "wire-7")
    assert code == 0 and "already credited" in out
    plans = home / "plans.toml"
    plans.write_text('[plans.daily]\nperiod = "day"\ntokens_per_period = 1000\nprice_rao = 500000000\n')
    code, out, _ = run(capsys, "billing", "buy-plan", "k1", "daily", "--plans", str(plans))
    assert code == 0 and out.startswith("plan daily active until")
    code, out, _ = run(capsys, "keys", "balance", "k1", "--json")
    assert json.loads(out) == {"key_id": "k1", "balance_rao": 1_000_000_000,
                               "plan_tokens_left": 1000, "plan": "daily", "can_request": True}
    code, out, _ = run(capsys, "billing", "report", "--json")
    assert json.loads(out) == {"totals_rao": {"manual": 1_500_000_000, "plan": -500_000_000},
                               "revenue_rao": 500_000_000, "burned_rao": 0}


@pytest.mark.parametrize("argv, message", [
    (["billing", "credit", "k1", "--rao", "-5", "--ref", "x"], "credit amount must be between 0"),
    (["billing", "buy-plan", "k1", "gold", "--plans", "/nonexistent.toml"],
     "cannot read plans file /nonexistent.toml"),
    (["keys", "topup-address", "k1", "--seed-file", "SEED_LOOSE"], "readable by others: chmod 600"),
    (["keys", "topup-address", "k1", "--seed-file", "SEED_SHORT"], "must hold 64 hex characters"),
    (["gateway", "--dangerous-unsigned-forwards", "--prices", "PRICES_BAD"], "bad price file"),
    (["gateway", "--dangerous-unsigned-forwards", "--plans", "x.toml"], "need --prices"),
])
def test_bad_input_is_one_line(home, capsys, argv, message) -> None:
    (home / "loose").write_text("ab" * 32)
    (home / "loose").chmod(0o644)
    (home / "short").write_text("abcd")
    (home / "short").chmod(0o600)
    (home / "prices.toml").write_text("[default]\nprompt_rao_per_mtok = 1.5\n")
    subst = {"SEED_LOOSE": str(home / "loose"), "SEED_SHORT": str(home / "short"),
             "PRICES_BAD": str(home / "prices.toml")}
    code, out, err = run(capsys, *[subst.get(a, a) for a in argv])
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_topup_address_is_the_derived_one(home, capsys) -> None:
    from chutes_subnet.billing.deposits import deposit_keypair

    seed = home / "seed"
    seed.write_text(bytes(range(32)).hex())
    seed.chmod(0o600)
    code, out, _ = run(capsys, "keys", "topup-address", "k9", "--seed-file", str(seed))
    assert code == 0 and out.strip() == deposit_keypair(bytes(range(32)), "k9").ss58_address
