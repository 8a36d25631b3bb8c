"""The miner's usage claim against the validator's own token count (pure).

The validator counts completion tokens itself, from the decrypted text with the
chute's tokenizer (:meth:`.reference.ReferenceModel.count_tokens`), and uses that
count for throughput. The miner's ``completion_tokens`` must agree with it within
:class:`UsageTolerance`: engines count special tokens the text does not show (EOS,
a stop string) and a few re-tokenization differences, so ``slack`` tokens plus a
``share`` of the count are forgiven; a larger difference in either direction means
another tokenizer (another model) or an inflated claim.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UsageTolerance", "usage_mismatch"]


@dataclass(frozen=True)
class UsageTolerance:
    """How far a usage claim may sit from the validator's count."""

    #: tokens the text cannot show (EOS, stop strings, a BOS some engines count)
    slack: int = 2
    #: relative difference allowed on top (re-tokenization of the decoded text)
    share: float = 0.05

    def __post_init__(self) -> None:
        if self.slack < 0 or not 0.0 <= self.share < 1.0:
            raise ValueError("slack >= 0 and share in [0, 1) required")


def usage_mismatch(claimed: int, counted: int, tolerance: UsageTolerance) -> str | None:
    """None if ``claimed`` agrees with ``counted``; else one sentence saying how not."""
    allowed = tolerance.slack + int(tolerance.share * counted)
    if abs(claimed - counted) <= allowed:
        return None
    return (f"usage claims {claimed} completion tokens; the chute's tokenizer counts "
            f"{counted} (tolerance {allowed})")
