"""Per-model prices and the cost of one answer, in integer rao (never floats).

Prices are operator configuration: rao per million prompt tokens and per million
completion tokens, per model, with an optional default for models not listed.
The cost of an answer rounds *up* to the next rao, so splitting work into many small
requests never makes it cheaper.

Price file (TOML)::

    [default]                      # optional; without it unlisted models are refused
    prompt_rao_per_mtok = 20_000_000        # 0.02 TAO per million prompt tokens
    completion_rao_per_mtok = 80_000_000

    [models."unsloth/Llama-3.2-1B-Instruct"]
    prompt_rao_per_mtok = 5_000_000
    completion_rao_per_mtok = 10_000_000
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAX_RAO", "MAX_TOKENS", "PriceBook", "TokenPrice", "cost_rao", "parse_rao"]

RAO_PER_TAO = 10**9
#: Largest amount the ledger accepts anywhere (TAO's total supply is 21e6 * 1e9 rao).
MAX_RAO = 21_000_000 * RAO_PER_TAO
#: Largest token count of one answer the ledger accepts (usage is bounded everywhere).
MAX_TOKENS = 1 << 32
_MTOK = 1_000_000


def parse_rao(value: object, what: str = "amount") -> int:
    """A non-negative integer rao amount no larger than :data:`MAX_RAO`.

    Raises ``ValueError`` naming ``what`` for floats, bools, negatives, overflow.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer number of rao, got {type(value).__name__}")  # input: ValueError
    if value < 0 or value > MAX_RAO:
        raise ValueError(f"{what} must be between 0 and {MAX_RAO} rao, got {value}")
    return value


@dataclass(frozen=True)
class TokenPrice:
    """Rao per million prompt tokens and per million completion tokens."""

    prompt_rao_per_mtok: int
    completion_rao_per_mtok: int

    def __post_init__(self) -> None:
        parse_rao(self.prompt_rao_per_mtok, "prompt_rao_per_mtok")
        parse_rao(self.completion_rao_per_mtok, "completion_rao_per_mtok")


def _tokens(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise ValueError(f"{what} must be an integer in 0..{MAX_TOKENS}")
    return value


def cost_rao(prompt_tokens: int, completion_tokens: int, price: TokenPrice) -> int:
    """Cost of one answer in rao, rounded up (exact integer arithmetic)."""
    p = _tokens(prompt_tokens, "prompt_tokens")
    c = _tokens(completion_tokens, "completion_tokens")
    micro = p * price.prompt_rao_per_mtok + c * price.completion_rao_per_mtok
    return -(-micro // _MTOK)


@dataclass(frozen=True)
class PriceBook:
    """Prices per model; ``default`` covers models not listed (None = refuse them)."""

    models: Mapping[str, TokenPrice] = field(default_factory=dict)
    default: TokenPrice | None = None

    def price(self, model: str) -> TokenPrice | None:
        """The price of ``model``, or None when the operator set no price for it."""
        return self.models.get(model, self.default)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PriceBook:
        """Build from parsed TOML; unknown keys and bad values raise ``ValueError``."""
        unknown = set(data) - {"default", "models"}
        if unknown:
            raise ValueError(f"unknown price file section(s): {', '.join(sorted(unknown))}")
        default = _price_table(data["default"], "[default]") if "default" in data else None
        models_raw = data.get("models", {})
        if not isinstance(models_raw, Mapping):
            raise ValueError("[models] must be a table of model tables")  # operator input
        models = {str(name): _price_table(table, f'[models."{name}"]')
                  for name, table in models_raw.items()}
        return cls(models=models, default=default)

    @classmethod
    def load(cls, path: str | Path) -> PriceBook:
        """Read a price file; any problem is one ``ValueError`` line naming the file."""
        try:
            with open(path, "rb") as fh:
                return cls.from_mapping(tomllib.load(fh))
        except OSError as exc:
            raise ValueError(f"cannot read price file {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise ValueError(f"bad price file {path}: {exc}") from None


def _price_table(table: object, where: str) -> TokenPrice:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")  # operator input
    keys = {"prompt_rao_per_mtok", "completion_rao_per_mtok"}
    if set(table) != keys:
        raise ValueError(f"{where} needs exactly {', '.join(sorted(keys))}")
    return TokenPrice(table["prompt_rao_per_mtok"], table["completion_rao_per_mtok"])
