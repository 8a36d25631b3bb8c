"""What the gateway asks of billing: may this key start a request, charge this
answer, and what does the key holder see (``GET /v1/balance``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chutes_subnet.billing.deposits import deposit_keypair
from chutes_subnet.billing.ledger import Charge, Ledger
from chutes_subnet.billing.prices import PriceBook

__all__ = ["BillingGate", "PaymentRequired"]

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

    def deposit_address(self, key_id: str) -> str | None:
        """The key's own deposit address (derived once, then recorded)."""
        if self.master_seed is None:
            return None
        address = deposit_keypair(self.master_seed, key_id).ss58_address
        return self.ledger.assign_address(key_id, address)

    def admit(self, key_id: str, model: str | None = None) -> None:
        """Raise :class:`PaymentRequired` unless the key may start a request for ``model``."""
        if model is not None and self.prices.price(model) is None:
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
        price = self.prices.price(model)
        if price is None:
            log.error("answer for unpriced model %s not charged (key %s)", model, key_id)
            return None
        return self.ledger.charge(key_id, model, prompt_tokens, completion_tokens, ref, price)

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
        }
