"""Prices and plans: exact integer money, one clear error per bad config."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chutes_subnet.billing.plans import Plan, period_key, plan_expiry, split_covered
from chutes_subnet.billing.prices import MAX_RAO, MAX_TOKENS, PriceBook, TokenPrice, cost_rao

PRICE = TokenPrice(prompt_rao_per_mtok=20_000_000, completion_rao_per_mtok=80_000_000)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_cost_is_exact_and_rounds_up() -> None:
    assert cost_rao(1_000_000, 0, PRICE) == 20_000_000
    assert cost_rao(27, 8, PRICE) == -(-(27 * 20_000_000 + 8 * 80_000_000) // 1_000_000) == 1180
    assert cost_rao(1, 0, TokenPrice(1, 1)) == 1  # never free by rounding
    assert cost_rao(0, 0, PRICE) == 0


@pytest.mark.parametrize("bad", [-1, MAX_TOKENS + 1, 1.5, True, "10"])
def test_cost_refuses_unbounded_or_non_integer_tokens(bad) -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        cost_rao(bad, 0, PRICE)


@given(st.integers(0, MAX_TOKENS // 2), st.integers(0, MAX_TOKENS // 2),
       st.integers(0, MAX_TOKENS // 2), st.integers(0, MAX_TOKENS // 2))
def test_splitting_a_request_never_makes_it_cheaper(p1: int, c1: int, p2: int, c2: int) -> None:
    whole = cost_rao(p1 + p2, c1 + c2, PRICE)
    exact_micro = (p1 + p2) * PRICE.prompt_rao_per_mtok + (c1 + c2) * PRICE.completion_rao_per_mtok
    assert whole * 1_000_000 >= exact_micro > (whole - 1) * 1_000_000 or whole == 0
    assert cost_rao(p1, c1, PRICE) + cost_rao(p2, c2, PRICE) >= whole


@pytest.mark.parametrize("value, message", [
    (-1, "between 0 and"), (MAX_RAO + 1, "between 0 and"), (1.0, "integer number of rao"),
    (True, "integer number of rao"),
])
def test_prices_are_bounded_integers(value, message) -> None:
    with pytest.raises(ValueError, match=message):
        TokenPrice(value, 1)


def test_price_file(tmp_path) -> None:
    good = tmp_path / "prices.toml"
    good.write_text('[default]\nprompt_rao_per_mtok = 5\ncompletion_rao_per_mtok = 7\n'
                    '[models."m/a"]\nprompt_rao_per_mtok = 1\ncompletion_rao_per_mtok = 2\n')
    book = PriceBook.load(good)
    assert book.price("m/a") == TokenPrice(1, 2)
    assert book.price("other") == TokenPrice(5, 7)
    assert PriceBook(models={"x": TokenPrice(1, 1)}).price("other") is None  # no default
    for text, message in [
        ("[default]\nprompt_rao_per_mtok = -5\ncompletion_rao_per_mtok = 7\n", "between 0"),
        ("[default]\nprompt_rao_per_mtok = 0.5\ncompletion_rao_per_mtok = 7\n", "integer"),
        ("[default]\nprompt_rao_per_mtok = 1\n", "needs exactly"),
        ("[free]\n", "unknown price file section"),
        ("[default\n", "bad price file"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as err:
            PriceBook.load(bad)
        assert "\n" not in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(ValueError, match="cannot read price file"):
        PriceBook.load(tmp_path / "missing.toml")


def test_periods_and_expiry() -> None:
    assert period_key("day", ts(2026, 12, 31, 23, 59, 59)) == "2026-12-31"
    assert period_key("day", ts(2027, 1, 1)) == "2027-01-01"
    assert period_key("month", ts(2026, 12, 31, 23)) == "2026-12"
    daily = Plan("daily", "day", 1000, 5, term_periods=3)
    assert plan_expiry(daily, ts(2026, 12, 2, 15)) == ts(2026, 12, 5)
    monthly = Plan("monthly", "month", 10**6, 5, term_periods=2)
    assert plan_expiry(monthly, ts(2026, 12, 20)) == ts(2027, 2, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"plan_id": "Bad Name"}, "plan id"), ({"period": "week"}, "period"),
    ({"tokens_per_period": 0}, "tokens_per_period"), ({"price_rao": -1}, "between 0"),
    ({"term_periods": 0}, "term_periods"),
])
def test_plan_validation(kwargs, message) -> None:
    fields = {"plan_id": "p", "period": "day", "tokens_per_period": 10, "price_rao": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        Plan(**fields)


def test_plan_covers_prompt_first() -> None:
    assert split_covered(30, 20, 100) == (50, 0, 0)
    assert split_covered(30, 20, 40) == (40, 0, 10)
    assert split_covered(30, 20, 10) == (10, 20, 20)
    assert split_covered(30, 20, 0) == (0, 30, 20)


def test_deployed_chute_prices_apply_where_the_operator_is_silent(tmp_path) -> None:
    """Operator's explicit model entry > the chute's deployed price > operator default;
    a chute deployed at 0/0 or retired is not free: the default (or a refusal) applies."""
    from chutes_subnet.billing.gate import BillingGate, chute_registry_prices
    from chutes_subnet.billing.ledger import Ledger
    from chutes_subnet.registry.chute_store import SQLChuteStore
    from chutes_subnet.registry.chutes import parse_chute_spec
    from chutes_subnet.stores.database import open_database
    from tests.chute_fixtures import chute_dict

    db = open_database(str(tmp_path / "gw.db"))
    store = SQLChuteStore(db)
    store.deploy(parse_chute_spec(chute_dict("acme/priced")), actor="owner")
    store.deploy(parse_chute_spec(chute_dict("acme/free", prices={
        "prompt_rao_per_mtok": 0, "completion_rao_per_mtok": 0})), actor="owner")
    store.deploy(parse_chute_spec(chute_dict("acme/gone")), actor="owner")
    store.retire(parse_chute_spec(chute_dict("acme/gone")).chute_id, actor="owner")
    override = TokenPrice(7, 7)
    for default in (None, PRICE):
        gate = BillingGate(Ledger(db), PriceBook(models={"acme/override": override},
                                                 default=default),
                           chute_prices=chute_registry_prices(store))
        assert gate.price("acme/priced") == TokenPrice(10, 40)
        assert gate.price("acme/free") == default
        assert gate.price("acme/gone") == default
        assert gate.price("never-deployed") == default
        assert gate.price("acme/override") == override
    store.deploy(parse_chute_spec(chute_dict("acme/override")), actor="owner")
    assert gate.price("acme/override") == override  # the operator's explicit entry wins
    db.close()
