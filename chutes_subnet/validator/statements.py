"""The validator's attestation statements: one signed per instance that passed a round.

:func:`statement_for` turns a verified :class:`~chutes_subnet.validator.attestor.AttestedInstance`
into a :class:`~chutes_subnet.attestation.verify.signed_statements.Statement` valid from the round's
block until the attestation's TTL (in ~12 s blocks, capped at
:data:`~chutes_subnet.attestation.verify.signed_statements.MAX_VALIDITY_BLOCKS`).
:func:`merge_statements` folds it into the registry record's list: this validator's
older statements are replaced; other validators' statements are kept while they are
unexpired and name the same key; the list stays bounded
(:data:`~chutes_subnet.attestation.verify.signed_statements.MAX_STATEMENTS`).
"""

from __future__ import annotations

import json
import math

from chutes_subnet.attestation.verify.signed_statements import (
    BLOCK_SECONDS,
    MAX_STATEMENTS,
    MAX_VALIDITY_BLOCKS,
    SignedStatement,
    Statement,
    key_sha256,
    parse_statement,
)
from chutes_subnet.errors import StatementError

from .attestor import AttestedInstance

__all__ = ["BLOCK_SECONDS", "merge_statements", "statement_for"]


def statement_for(instance: AttestedInstance, *, netuid: int, validator: str,
                  policy_sha256: str, block: int, ttl_seconds: float) -> Statement:
    """What this validator vouches for about ``instance`` at ``block``."""
    ttl_blocks = min(MAX_VALIDITY_BLOCKS, max(1, math.floor(ttl_seconds / BLOCK_SECONDS)))
    s = instance.summary
    return Statement(
        netuid=netuid, validator=validator, instance_id=instance.instance_id,
        chute_id=instance.chute_id, e2e_key_sha256=key_sha256(instance.e2e_pubkey),
        receipt_key_sha256=key_sha256(instance.receipt_pubkey) if instance.receipt_pubkey
        else None,
        quote_sha256=instance.quote_sha256, policy_sha256=policy_sha256,
        manifest_sha384=s.manifest_sha384, block=block, expires_block=block + ttl_blocks,
        simulated=bool(s.simulated))


def merge_statements(existing: tuple[str, ...], mine: SignedStatement,
                     now_block: int) -> tuple[str, ...]:
    """``existing`` (wire JSON texts) with ``mine`` in place of this validator's older ones."""
    kept: list[str] = []
    for text in existing:
        try:
            other = parse_statement(json.loads(text)).statement
        except (StatementError, ValueError, RecursionError):
            continue
        if other.validator == mine.statement.validator or other.expires_block < now_block \
                or other.instance_id != mine.statement.instance_id \
                or other.e2e_key_sha256 != mine.statement.e2e_key_sha256:
            continue
        kept.append(text)
    wire = json.dumps(mine.to_wire(), separators=(",", ":"), sort_keys=True)
    return (wire, *kept[: MAX_STATEMENTS - 1])
