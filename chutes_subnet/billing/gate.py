"""What the gateway asks of billing: may this key start a request, charge this
answer, and what does the key holder see (``GET /v1/balance``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chutes_subnet.billing.deposits import deposit_keypair
from chutes_subnet.billing.ledger import Charge, Ledger, Subscription
from chutes_subnet.billing.plans import Plan
from chutes_subnet.billing.prices import PriceBook, TokenPrice

__all__ = ["BillingGate", "PaymentRequired", "chute_registry_prices", "open_billing"]

log = logging.getLogger(__name__)


class PaymentRequired(Exception):
    """The key has no positive balance and no plan quota left (HTTP 402)."""

    def __init__(self, message: str, deposit_address: str | None) -> None:
        super().__init__(message)
        self.deposit_address = deposit_address


@dataclass
class BillingGate:
    """Ledger + prices + the deposit master seed (None: no deposit addresses)."""

    ledger: Ledger
    prices: PriceBook
    master_seed: bytes | None = None
    plans: dict[str, Plan] | None = None
    #: the price its owner deployed a chute with, by model (the chute registry)
    chute_prices: Callable[[str], TokenPrice | None] | None = None

    def price(self, model: str) -> TokenPrice | None:
        """What ``model`` costs: the operator's explicit entry for it, else the price its
        chute was deployed with (non-zero), else the operator's default, else None
        (refused: nothing is free unless the operator says so)."""
        explicit = self.prices.models.get(model)
        if explicit is not None:
            return explicit
        deployed = self.chute_prices(model) if self.chute_prices is not None else None
        if deployed is not None and (deployed.prompt_rao_per_mtok or
                                     deployed.completion_rao_per_mtok):
            return deployed
        return self.prices.default

    def deposit_address(self, key_id: str) -> str | None:
        """The key's own deposit address (derived once, then recorded)."""
        if self.master_seed is None:
            return None
        address = deposit_keypair(self.master_seed, key_id).ss58_address
        return self.ledger.assign_address(key_id, address)

    @property
    def blocking(self) -> bool:
        """True when ledger calls may wait on the network."""
        return self.ledger.blocking

    def admit(self, key_id: str, model: str | None = None) -> None:
        """Raise :class:`PaymentRequired` unless the key may start a request for ``model``."""
        if model is not None and self.price(model) is None:
            raise PaymentRequired(f"model {model} has no price on this gateway", None)
        admission = self.ledger.admission(key_id)
        if not admission.allowed:
            address = self.deposit_address(key_id)
            how = (f"send TAO to your deposit address {address}" if address
                   else "ask the gateway operator to credit your key")
            raise PaymentRequired(
                f"balance exhausted ({admission.balance_rao} rao) and no plan quota left: "
                f"{how}, or buy a plan; GET /v1/balance shows your balance", address)

    def charge(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int,
               ref: str) -> Charge | None:
        """Debit one answer (idempotent on ``ref``); None when the model has no price."""
        price = self.price(model)
        if price is None:
            log.error("answer for unpriced model %s not charged (key %s)", model, key_id)
            return None
        return self.ledger.charge(key_id, model, prompt_tokens, completion_tokens, ref, price)

    def buy_plan(self, key_id: str, plan_id: str, ref: str) -> Subscription:
        """Buy one of the operator's plans from the key's balance.

        Raises ``LookupError`` for an unknown plan and
        :class:`~chutes_subnet.billing.ledger.InsufficientBalance`."""
        plan = (self.plans or {}).get(plan_id)
        if plan is None:
            raise LookupError(f"no plan {plan_id!r} on this gateway")
        return self.ledger.buy_plan(key_id, plan, ref)

    def status(self, key_id: str) -> dict[str, Any]:
        """The body of ``GET /v1/balance``."""
        admission = self.ledger.admission(key_id)
        sub = self.ledger.subscription(key_id)
        return {
            "key_id": key_id,
            "balance_rao": admission.balance_rao,
            "deposit_address": self.deposit_address(key_id),
            "plan": None if sub is None else {
                "plan_id": sub.plan_id, "period": sub.period, "quota": sub.quota,
                "tokens_left": admission.plan_tokens_left, "expires_at": sub.expires_at,
            },
            "can_request": admission.allowed,
            "plans_for_sale": {p.plan_id: {"period": p.period, "tokens_per_period":
                                           p.tokens_per_period, "price_rao": p.price_rao,
                                           "term_periods": p.term_periods}
                               for p in (self.plans or {}).values()},
        }


def chute_registry_prices(store: Any) -> Callable[[str], TokenPrice | None]:
    """Prices of live chutes in a chute store, looked up by model name."""
    from chutes_subnet.wire.protocol import chute_id_for_model

    def lookup(model: str) -> TokenPrice | None:
        chute = store.get(chute_id_for_model(model))
        if chute is None or chute.retired:
            return None
        p = chute.spec.prices
        return TokenPrice(p.prompt_rao_per_mtok, p.completion_rao_per_mtok)

    return lookup


def open_billing(db: Any, *, prices: str, plans: str | None = None,
                 seed_file: str | None = None) -> BillingGate:
    """A gate on the gateway's database ``db`` (a :class:`~chutes_subnet.stores.database.Database`
    or URL) from the operator's files; bad input is one ``ValueError`` line."""
    from chutes_subnet.billing.config import load_plans, load_seed

    book = PriceBook.load(prices)
    return BillingGate(Ledger(db), book,
                       master_seed=load_seed(seed_file) if seed_file else None,
                       plans=load_plans(plans) if plans else None)
