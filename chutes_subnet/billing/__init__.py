"""Payment gate: prepaid balances in rao, per-model prices, plans, TAO deposits from the
chain, and the revenue buy-back-and-burn. See docs/billing.md."""

from chutes_subnet.billing.gate import BillingGate, PaymentRequired
from chutes_subnet.billing.ledger import Admission, Charge, InsufficientBalance, Ledger
from chutes_subnet.billing.plans import Plan
from chutes_subnet.billing.prices import PriceBook, TokenPrice, cost_rao

__all__ = [
    "Admission",
    "BillingGate",
    "Charge",
    "InsufficientBalance",
    "Ledger",
    "PaymentRequired",
    "Plan",
    "PriceBook",
    "TokenPrice",
    "cost_rao",
]
