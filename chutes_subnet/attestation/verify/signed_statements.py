"""Validator-signed attestation statements and the stake-weighted quorum check.

A validator that verified an instance in a round signs a :class:`Statement`: "on
subnet ``netuid`` at ``block``, I (``validator``) verified instance ``instance_id``
of chute ``chute_id`` serving E2EE key ``sha256(e2e_pubkey)`` (and receipt key ``sha256(receipt_pubkey)``)
with TDX quote ``sha256(quote)`` under policy ``policy_sha256`` (and workload
manifest ``manifest_sha384``); this holds until ``expires_block``". A light client
(``verify="quorum"``) accepts an instance's key when enough *stake* vouches for it,
instead of verifying TDX/GPU evidence itself.

Canonical bytes (what is signed; version 1)::

    b"chutes-subnet/statement/1\\n" + JSON(fields, sort_keys, separators=(",", ":"),
                                          ensure_ascii=True)

``fields`` holds every attribute of :class:`Statement` (absent optional hashes are
``null``). Hashes are lowercase hex; ``validator`` is the hotkey's SS58 address. The
signature is sr25519 by the validator's hotkey (bittensor's keypair, the same one
that signs btauth/1 requests), hex on the wire::

    {"v": 1, "statement": {...fields...}, "signature": "<128 hex>"}

Parsing is bounded (:data:`MAX_STATEMENTS_BYTES`, :data:`MAX_STATEMENTS`, field
sizes) and raises :class:`~chutes_subnet.errors.StatementError` with one line.
:func:`check_quorum` is pure: statements + a metagraph snapshot + the current block
in, a :class:`QuorumVerdict` with reasons out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from bittensor import sp_core

from chutes_subnet.errors import StatementError
from chutes_subnet.wire.protocol import MAX_STATEMENTS, MAX_STATEMENTS_BYTES

from .binding import constant_time_equal
from .reasons import Reason

if TYPE_CHECKING:
    from chutes_subnet.chain.types import Metagraph

__all__ = [
    "BLOCK_SECONDS",
    "MAX_STATEMENTS",
    "MAX_STATEMENTS_BYTES",
    "MAX_VALIDITY_BLOCKS",
    "STATEMENT_VERSION",
    "QuorumRule",
    "QuorumVerdict",
    "SignedStatement",
    "Statement",
    "check_quorum",
    "key_sha256",
    "parse_statement",
    "parse_statements",
    "policy_sha256",
    "sign_statement",
    "statements_to_json",
]

STATEMENT_VERSION = 1
_DOMAIN = b"chutes-subnet/statement/1\n"
#: the longest validity a statement may claim (~4 h at 12 s blocks)
MAX_VALIDITY_BLOCKS = 1200
#: seconds per subtensor block (converts wall-clock durations into blocks)
BLOCK_SECONDS = 12.0
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX96 = re.compile(r"[0-9a-f]{96}")
_SS58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{46,48}")
_INSTANCE = re.compile(r"[0-9a-f]{32}")
_CHUTE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_BLOCK = 2**63 - 1


def key_sha256(key: bytes) -> str:
    """Lowercase hex SHA-256 of a key (what statements name instead of the key)."""
    return hashlib.sha256(key).hexdigest()


def _canon(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canon(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (frozenset, set)):
        return sorted((_canon(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def policy_sha256(policy: Any) -> str:
    """SHA-256 of a validator :class:`~chutes_subnet.attestation.verify.policy.Policy` in a
    canonical JSON form (sets sorted), the ``policy_sha256`` its statements carry."""
    return hashlib.sha256(json.dumps(_canon(policy), sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


@dataclass(frozen=True)
class Statement:
    """What a validator vouches for about one instance (see module doc)."""

    netuid: int
    validator: str
    instance_id: str
    chute_id: str
    e2e_key_sha256: str
    quote_sha256: str
    policy_sha256: str
    block: int
    expires_block: int
    receipt_key_sha256: str | None = None
    manifest_sha384: str | None = None
    #: the evidence was SIMULATED (development validators only; never confidential)
    simulated: bool = False

    def __post_init__(self) -> None:
        _validate(self)

    def canonical_bytes(self) -> bytes:
        """The exact bytes the validator signs."""
        return _DOMAIN + json.dumps(asdict(self), sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=True).encode("ascii")


def _validate(s: Statement) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise StatementError(f"statement: {what}")

    for name in ("netuid", "block", "expires_block"):
        v = getattr(s, name)
        need(type(v) is int and 0 <= v <= _MAX_BLOCK, f"{name} must be a non-negative integer")
    need(isinstance(s.validator, str) and bool(_SS58.fullmatch(s.validator)),
         "validator must be an SS58 address")
    need(isinstance(s.instance_id, str) and bool(_INSTANCE.fullmatch(s.instance_id)),
         "instance_id must be 32 lowercase hex digits")
    need(isinstance(s.chute_id, str) and bool(_CHUTE.fullmatch(s.chute_id)),
         "chute_id must be a lowercase UUID")
    need(type(s.simulated) is bool, "simulated must be a boolean")
    for name in ("e2e_key_sha256", "quote_sha256", "policy_sha256"):
        v = getattr(s, name)
        need(isinstance(v, str) and bool(_HEX64.fullmatch(v)), f"{name} must be 64 lowercase hex")
    r = s.receipt_key_sha256
    need(r is None or (isinstance(r, str) and bool(_HEX64.fullmatch(r))),
         "receipt_key_sha256 must be 64 lowercase hex or null")
    m = s.manifest_sha384
    need(m is None or (isinstance(m, str) and bool(_HEX96.fullmatch(m))),
         "manifest_sha384 must be 96 lowercase hex or null")
    need(s.block <= s.expires_block <= s.block + MAX_VALIDITY_BLOCKS,
         f"expires_block must be within {MAX_VALIDITY_BLOCKS} blocks after block")


@dataclass(frozen=True)
class SignedStatement:
    """A statement and its sr25519 signature by ``statement.validator``."""

    statement: Statement
    signature: bytes

    def signature_valid(self) -> bool:
        """True iff the signature verifies for the statement's canonical bytes."""
        try:
            return bool(sp_core.verify(self.statement.canonical_bytes(), self.signature,
                                       self.statement.validator, sp_core.CRYPTO_SR25519))
        except (ValueError, TypeError):
            return False

    def to_wire(self) -> dict[str, Any]:
        return {"v": STATEMENT_VERSION, "statement": asdict(self.statement),
                "signature": self.signature.hex()}


def sign_statement(statement: Statement, signer: Any) -> SignedStatement:
    """Sign with ``signer`` (a bittensor hotkey keypair, or a wallet: its hotkey).

    The signer's address must be ``statement.validator``; only sr25519 is accepted.
    """
    from bittensor.signing import resolve_signer

    keypair = resolve_signer(signer, role="hotkey")
    if keypair.ss58_address != statement.validator:
        raise ValueError("the signer's hotkey is not the statement's validator")
    if keypair.crypto_type != sp_core.CRYPTO_SR25519:
        raise ValueError("statements are signed with an sr25519 hotkey")
    return SignedStatement(statement, bytes(keypair.sign(statement.canonical_bytes())))


_FIELDS = {f.name for f in fields(Statement)}


def parse_statement(obj: Any) -> SignedStatement:
    """One wire statement (parsed JSON) -> :class:`SignedStatement`; raises ``StatementError``.

    Checks shape and sizes only; the signature is checked by :func:`check_quorum`.
    """
    if not isinstance(obj, dict) or set(obj) != {"v", "statement", "signature"}:
        raise StatementError("statement: expected an object with v, statement, signature")
    if obj["v"] != STATEMENT_VERSION or type(obj["v"]) is not int:
        raise StatementError(f"statement: unsupported version (expected {STATEMENT_VERSION})")
    body, sig = obj["statement"], obj["signature"]
    if not isinstance(body, dict) or set(body) != _FIELDS:
        raise StatementError(f"statement: fields must be exactly {sorted(_FIELDS)}")
    if not isinstance(sig, str) or not re.fullmatch(r"[0-9a-f]{128}", sig):
        raise StatementError("statement: signature must be 128 lowercase hex digits")
    try:
        statement = Statement(**body)
    except TypeError as exc:  # pragma: no cover - the field set is checked above
        raise StatementError("statement: unexpected fields") from exc
    return SignedStatement(statement, bytes.fromhex(sig))


def parse_statements(raw: bytes) -> list[SignedStatement]:
    """A bounded JSON answer ``{"statements": [...]}``; raises ``StatementError``."""
    if len(raw) > MAX_STATEMENTS_BYTES:
        raise StatementError("statements answer exceeds the size limit")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StatementError("statements answer is not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("statements"), list):
        raise StatementError("statements answer must be an object with a statements list")
    items = data["statements"]
    if len(items) > MAX_STATEMENTS:
        raise StatementError(f"statements answer carries more than {MAX_STATEMENTS} statements")
    return [parse_statement(item) for item in items]


def statements_to_json(statements: Iterable[SignedStatement]) -> dict[str, Any]:
    """The wire answer for ``statements`` (at most :data:`MAX_STATEMENTS`)."""
    return {"statements": [s.to_wire() for s in list(statements)[:MAX_STATEMENTS]]}


@dataclass(frozen=True)
class QuorumRule:
    """How much vouching a client requires.

    ``min_validators`` distinct permitted validators (k) holding together at least
    ``min_stake_fraction`` of the stake of all permitted validators in the snapshot.
    ``accepted_policies`` (policy hashes) restricts which validator policies count;
    empty accepts any. ``max_snapshot_age_blocks`` bounds how old the metagraph may be.
    """

    min_validators: int = 3
    min_stake_fraction: float = 0.5
    accepted_policies: frozenset[str] = frozenset()
    max_snapshot_age_blocks: int = 100

    def __post_init__(self) -> None:
        if self.min_validators < 1:
            raise ValueError("min_validators must be >= 1")
        if not 0.0 < self.min_stake_fraction <= 1.0:
            raise ValueError("min_stake_fraction must be in (0, 1]")
        if self.max_snapshot_age_blocks < 0:
            raise ValueError("max_snapshot_age_blocks must be >= 0")


@dataclass(frozen=True)
class QuorumVerdict:
    """Outcome of :func:`check_quorum`; ``ok`` iff ``reasons`` is empty.

    ``ignored`` says why each statement that did not count was set aside;
    ``validators`` are the hotkeys that counted, ``stake_fraction`` their share.
    """

    instance_id: str
    reasons: tuple[Reason, ...]
    validators: tuple[str, ...] = ()
    stake_fraction: float = 0.0
    ignored: tuple[Reason, ...] = ()
    receipt_key_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons


def check_quorum(statements: Sequence[SignedStatement], *, instance_id: str,
                 e2e_pubkey: bytes, receipt_pubkey: bytes | None, metagraph: Metagraph,
                 rule: QuorumRule, now_block: int, chute_id: str | None = None,
                 accept_simulated: bool = False) -> QuorumVerdict:
    """Does a stake-weighted quorum vouch for ``e2e_pubkey`` as ``instance_id``'s key?

    A statement counts when: it is about this instance on this subnet, its signature
    verifies, its validator holds a permit in ``metagraph``, ``block <= now_block <=
    expires_block``, and its policy is accepted. Each validator counts once, with
    its stake from the snapshot. Fails closed (``reasons``) when the snapshot is
    older than the rule allows, when any counted statement names another E2EE or
    receipt key than the ones offered (``key_mismatch``: a validator contradicts the
    gateway) or another chute than ``chute_id`` (``chute_mismatch``), when it vouches
    for simulated evidence without ``accept_simulated`` (``simulated``), or when fewer than k validators / less than the stake fraction vouch
    (``quorum_not_reached``). Pure; never raises.
    """
    ignored: list[Reason] = []
    if now_block - metagraph.block > rule.max_snapshot_age_blocks or metagraph.block > now_block:
        return QuorumVerdict(instance_id, (Reason(
            "stale_metagraph", f"metagraph snapshot at block {metagraph.block} is not within "
            f"{rule.max_snapshot_age_blocks} blocks of {now_block}"),))
    want_key = key_sha256(e2e_pubkey)
    want_receipt = key_sha256(receipt_pubkey) if receipt_pubkey is not None else None
    counted: dict[str, Statement] = {}
    conflicts: list[Reason] = []
    for signed in statements[:MAX_STATEMENTS]:
        s = signed.statement
        who = s.validator[:12]
        neuron = metagraph.by_hotkey(s.validator)
        if s.instance_id != instance_id or s.netuid != metagraph.netuid:
            ignored.append(Reason("other_instance", f"{who}: statement about another instance"))
        elif s.validator in counted:
            ignored.append(Reason("duplicate", f"{who}: validator already counted"))
        elif neuron is None or not neuron.validator_permit:
            ignored.append(Reason("no_permit", f"{who}: not a permitted validator"))
        elif not s.block <= now_block <= s.expires_block:
            ignored.append(Reason("expired", f"{who}: valid blocks {s.block}..{s.expires_block}, "
                                             f"now {now_block}"))
        elif rule.accepted_policies and s.policy_sha256 not in rule.accepted_policies:
            ignored.append(Reason("policy_not_accepted", f"{who}: policy not accepted"))
        elif not signed.signature_valid():
            ignored.append(Reason("bad_signature", f"{who}: signature does not verify"))
        else:
            counted[s.validator] = s
            if not constant_time_equal(s.e2e_key_sha256.encode(), want_key.encode()):
                conflicts.append(Reason("key_mismatch", f"validator {who} vouches for another "
                                        "E2EE key than the one offered"))
            elif want_receipt is not None and s.receipt_key_sha256 != want_receipt:
                conflicts.append(Reason("key_mismatch", f"validator {who} vouches for another "
                                        "receipt key than the one offered"))
            elif chute_id is not None and s.chute_id != chute_id:
                conflicts.append(Reason("chute_mismatch", f"validator {who} vouches for the "
                                        "instance serving another chute"))
            elif s.simulated and not accept_simulated:
                conflicts.append(Reason("simulated", f"validator {who} verified SIMULATED "
                                        "evidence (development only)"))
    total = sum(n.stake for n in metagraph.validators)
    vouched = sum(n.stake for h in counted if (n := metagraph.by_hotkey(h)) is not None)
    fraction = vouched / total if total > 0 else 0.0
    receipt = next((s.receipt_key_sha256 for s in counted.values()), None)
    if conflicts:
        return QuorumVerdict(instance_id, (conflicts[0],), tuple(counted), fraction,
                             tuple(ignored))
    if len(counted) < rule.min_validators or fraction < rule.min_stake_fraction:
        tally = Counter(r.code for r in ignored)
        why = ", ".join(f"{code} x{n}" for code, n in sorted(tally.items()))
        return QuorumVerdict(instance_id, (Reason(
            "quorum_not_reached",
            f"{len(counted)} validator(s) with {fraction:.1%} of validator stake vouch; "
            f"need {rule.min_validators} and {rule.min_stake_fraction:.1%}"
            + (f" (not counted: {why})" if why else "")),),
            tuple(counted), fraction, tuple(ignored))
    return QuorumVerdict(instance_id, (), tuple(counted), fraction, tuple(ignored), receipt)
