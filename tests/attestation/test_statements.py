"""Validator-signed statements and the stake-weighted quorum check (pure core)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from bittensor.sp_core import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.attestation.verify.signed_statements import (
    MAX_STATEMENTS,
    MAX_STATEMENTS_BYTES,
    QuorumRule,
    SignedStatement,
    Statement,
    check_quorum,
    key_sha256,
    parse_statement,
    parse_statements,
    sign_statement,
    statements_to_json,
)
from chutes_subnet.chain import Metagraph, Neuron
from chutes_subnet.errors import StatementError
from chutes_subnet.wire.protocol import chute_id_for_model

E2E_KEY = b"\x01" * 1184
RECEIPT_KEY = b"\x02" * 32
INSTANCE = "ab" * 16
CHUTE = chute_id_for_model("test/model")
NETUID = 7
NOW = 1000
VALIDATORS = [Keypair.create_from_seed(bytes([i]) * 32) for i in range(1, 6)]
OUTSIDER = Keypair.create_from_seed(b"\x09" * 32)
MINER = Keypair.create_from_seed(b"\x0a" * 32)


def metagraph(stakes: tuple[float, ...] = (40, 30, 20, 5, 5), block: int = NOW) -> Metagraph:
    neurons = [Neuron(i, kp.ss58_address, kp.ss58_address, True, stakes[i], None)
               for i, kp in enumerate(VALIDATORS)]
    neurons.append(Neuron(9, MINER.ss58_address, MINER.ss58_address, False, 500.0, "1.2.3.4:1"))
    return Metagraph(NETUID, block, tuple(neurons))


def statement(kp: Keypair, **kw: object) -> Statement:
    base: dict[str, object] = dict(
        netuid=NETUID, validator=kp.ss58_address, instance_id=INSTANCE, chute_id=CHUTE,
        e2e_key_sha256=key_sha256(E2E_KEY), receipt_key_sha256=key_sha256(RECEIPT_KEY),
        quote_sha256="c" * 64, policy_sha256="d" * 64, manifest_sha384="e" * 96,
        block=NOW - 10, expires_block=NOW + 100)
    base.update(kw)
    return Statement(**base)  # type: ignore[arg-type]


def signed(kp: Keypair, **kw: object) -> SignedStatement:
    return sign_statement(statement(kp, **kw), kp)


DEFAULT_RULE = QuorumRule(3, 0.5)


def quorum(stmts: list[SignedStatement], rule: QuorumRule = DEFAULT_RULE, *,
           mg: Metagraph | None = None, key: bytes = E2E_KEY, now: int = NOW):
    return check_quorum(stmts, instance_id=INSTANCE, e2e_pubkey=key, receipt_pubkey=RECEIPT_KEY,
                        metagraph=mg or metagraph(), rule=rule, now_block=now, chute_id=CHUTE)


def test_canonical_bytes_are_pinned() -> None:
    s = statement(VALIDATORS[0])
    raw = s.canonical_bytes()
    assert raw.startswith(b"chutes-subnet/statement/1\n{\"block\":990,")
    body = json.loads(raw.split(b"\n", 1)[1])
    assert list(body) == sorted(body) and body["instance_id"] == INSTANCE
    assert b" " not in raw.split(b"\n", 1)[1]


def test_sign_round_trips_through_the_wire() -> None:
    s = signed(VALIDATORS[0])
    back = parse_statements(json.dumps(statements_to_json([s])).encode())
    assert back == [s] and back[0].signature_valid()


def test_signer_must_be_the_named_validator() -> None:
    with pytest.raises(ValueError, match="not the statement's validator"):
        sign_statement(statement(VALIDATORS[0]), VALIDATORS[1])


def test_quorum_reached_with_k_validators_and_enough_stake() -> None:
    v = quorum([signed(kp) for kp in VALIDATORS[:3]])
    assert v.ok, v.reasons
    assert v.validators == tuple(kp.ss58_address for kp in VALIDATORS[:3])
    assert v.stake_fraction == pytest.approx(0.9)
    assert v.receipt_key_sha256 == key_sha256(RECEIPT_KEY)


def test_low_stake_validators_do_not_reach_the_stake_threshold() -> None:
    v = quorum([signed(kp) for kp in VALIDATORS[2:]])  # 20 + 5 + 5 = 30 %
    assert [r.code for r in v.reasons] == ["quorum_not_reached"]
    assert v.stake_fraction == pytest.approx(0.3)


def test_duplicates_count_once() -> None:
    s = signed(VALIDATORS[0])
    v = quorum([s, s, signed(VALIDATORS[0], block=NOW - 5), signed(VALIDATORS[1])])
    assert [r.code for r in v.reasons] == ["quorum_not_reached"]
    assert len(v.validators) == 2
    assert [r.code for r in v.ignored] == ["duplicate", "duplicate"]


def test_non_permit_and_unregistered_signers_do_not_count() -> None:
    v = quorum([signed(MINER), signed(OUTSIDER), signed(VALIDATORS[0]), signed(VALIDATORS[1])],
               QuorumRule(2, 0.5))
    assert v.ok and len(v.validators) == 2  # the miner's 500 stake is not validator stake
    assert [r.code for r in v.ignored] == ["no_permit", "no_permit"]
    assert v.stake_fraction == pytest.approx(0.7)


def test_altered_statement_fails_its_signature() -> None:
    good = signed(VALIDATORS[0])
    forged = dataclasses.replace(good, statement=statement(VALIDATORS[0], quote_sha256="f" * 64))
    v = quorum([forged, signed(VALIDATORS[1]), signed(VALIDATORS[2])])
    assert [r.code for r in v.ignored] == ["bad_signature"]
    assert [r.code for r in v.reasons] == ["quorum_not_reached"]


def test_statement_signed_by_someone_else_fails() -> None:
    s = statement(VALIDATORS[0])
    sig = OUTSIDER.sign(s.canonical_bytes())
    v = quorum([SignedStatement(s, bytes(sig))], QuorumRule(1, 0.01))
    assert [r.code for r in v.ignored] == ["bad_signature"] and not v.ok


@pytest.mark.parametrize("kw", [dict(expires_block=NOW - 1, block=NOW - 50),
                                dict(block=NOW + 1, expires_block=NOW + 50)])
def test_expired_or_future_statements_do_not_count(kw: dict[str, int]) -> None:
    v = quorum([signed(VALIDATORS[0], **kw)], QuorumRule(1, 0.01))
    assert [r.code for r in v.ignored] == ["expired"] and not v.ok


def test_a_statement_for_another_key_is_a_conflict() -> None:
    stmts = [signed(kp) for kp in VALIDATORS[:3]]
    stmts.append(signed(VALIDATORS[3], e2e_key_sha256=key_sha256(b"other")))
    v = quorum(stmts)
    assert [r.code for r in v.reasons] == ["key_mismatch"]


def test_the_offered_key_must_be_the_vouched_key() -> None:
    v = quorum([signed(kp) for kp in VALIDATORS[:3]], key=b"\x03" * 1184)
    assert [r.code for r in v.reasons] == ["key_mismatch"]


def test_another_chute_or_simulated_evidence_is_refused() -> None:
    other = chute_id_for_model("cheaper/model")
    v = quorum([signed(kp, chute_id=other) for kp in VALIDATORS[:3]])
    assert [r.code for r in v.reasons] == ["chute_mismatch"]
    v = quorum([signed(kp, simulated=True) for kp in VALIDATORS[:3]])
    assert [r.code for r in v.reasons] == ["simulated"]


def test_policy_digest_is_stable_and_sensitive() -> None:
    from chutes_subnet.attestation.verify.policy import Policy
    from chutes_subnet.attestation.verify.signed_statements import policy_sha256
    a = Policy(accepted_tcb_statuses=frozenset({"UpToDate", "SWHardeningNeeded"}))
    b = Policy(accepted_tcb_statuses=frozenset({"SWHardeningNeeded", "UpToDate"}))
    assert policy_sha256(a) == policy_sha256(b) != policy_sha256(Policy())
    assert len(policy_sha256(Policy.default())) == 64


def test_other_instance_and_other_subnet_are_ignored() -> None:
    v = quorum([signed(VALIDATORS[0], instance_id="cd" * 16), signed(VALIDATORS[1], netuid=8)],
               QuorumRule(1, 0.01))
    assert [r.code for r in v.ignored] == ["other_instance", "other_instance"] and not v.ok


def test_policy_allowlist_and_stale_snapshot() -> None:
    stmts = [signed(kp) for kp in VALIDATORS[:3]]
    v = quorum(stmts, QuorumRule(3, 0.5, frozenset({"a" * 64})))
    assert {r.code for r in v.ignored} == {"policy_not_accepted"} and not v.ok
    assert quorum(stmts, QuorumRule(3, 0.5, frozenset({"d" * 64}))).ok
    stale = quorum(stmts, mg=metagraph(block=NOW - 500))
    assert [r.code for r in stale.reasons] == ["stale_metagraph"]


@pytest.mark.parametrize("edit,match", [
    (lambda w: w.update(v=2), "unsupported version"),
    (lambda w: w.update(extra=1), "expected an object"),
    (lambda w: w["statement"].pop("block"), "fields must be exactly"),
    (lambda w: w.update(signature="00"), "signature must be"),
    (lambda w: w["statement"].update(block=-1), "block must be"),
    (lambda w: w["statement"].update(block=True), "block must be"),
    (lambda w: w["statement"].update(expires_block=10**6), "expires_block must be within"),
    (lambda w: w["statement"].update(instance_id="AB" * 16), "instance_id must be"),
    (lambda w: w["statement"].update(validator="0x00"), "validator must be"),
    (lambda w: w["statement"].update(chute_id="x"), "chute_id must be"),
    (lambda w: w["statement"].update(simulated=0), "simulated must be"),
    (lambda w: w["statement"].update(quote_sha256="c" * 63), "quote_sha256 must be"),
    (lambda w: w["statement"].update(manifest_sha384="e" * 64), "manifest_sha384 must be"),
])
def test_malformed_statements_are_typed_errors(edit, match: str) -> None:
    wire = signed(VALIDATORS[0]).to_wire()
    edit(wire)
    with pytest.raises(StatementError, match=match):
        parse_statement(wire)


def test_answer_bounds() -> None:
    one = signed(VALIDATORS[0]).to_wire()
    with pytest.raises(StatementError, match="more than"):
        parse_statements(json.dumps({"statements": [one] * (MAX_STATEMENTS + 1)}).encode())
    with pytest.raises(StatementError, match="size limit"):
        parse_statements(b" " * (MAX_STATEMENTS_BYTES + 1))
    with pytest.raises(StatementError, match="not JSON"):
        parse_statements(b"\xff")
    with pytest.raises(StatementError, match="statements list"):
        parse_statements(b"[]")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=70),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=20), c,
                                                                         max_size=4),
                     max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600) | _json.map(lambda j: json.dumps({"statements": [j]}).encode()))
def test_parser_never_raises_anything_but_statement_error(raw: bytes) -> None:
    try:
        out = parse_statements(raw)
    except StatementError:
        return
    assert all(isinstance(s, SignedStatement) for s in out)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["instance_id", "quote_sha256", "receipt_key_sha256", "policy_sha256", "block",
                              "expires_block", "e2e_key_sha256"]),
       data=st.data())
def test_any_single_field_change_breaks_the_signature(field: str, data: st.DataObject) -> None:
    good = signed(VALIDATORS[0])
    wire = good.to_wire()
    if field in ("block", "expires_block"):
        wire["statement"][field] += data.draw(st.integers(1, 5)) * (1 if field == "block" else -1)
    else:
        old = wire["statement"][field]
        wire["statement"][field] = data.draw(
            st.text("0123456789abcdef", min_size=len(old), max_size=len(old)).filter(
                lambda t: t != old))
    assert not parse_statement(wire).signature_valid()
