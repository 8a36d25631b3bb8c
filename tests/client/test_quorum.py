"""``verify="quorum"`` end to end on loopback: a real miner (simulated TD), a real
gateway serving validator-signed statements from its registry, the E2EE transports,
and a client that weighs the statements with its own metagraph snapshot — refusing,
before any byte of the request is sent, whatever does not make a quorum."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from bittensor.sp_core import Keypair

from chutes_subnet.attestation.verify.signed_statements import (
    QuorumRule,
    SignedStatement,
    Statement,
    key_sha256,
    sign_statement,
)
from chutes_subnet.chain import Metagraph, Neuron
from chutes_subnet.client import AsyncE2EETransport, ClientPolicy, E2EETransport
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.errors import NoVerifiedInstanceError
from chutes_subnet.miner import InstanceIdentity
from chutes_subnet.registry import InstanceRecord
from tests.client_fixtures import Recorder, Rewriter, gateway
from tests.miner_fixtures import miner_record, start_real_miner

MODEL = "test/quorum"
MSG = [{"role": "user", "content": "the launch code is 0000"}]
DEV = ClientPolicy.development(gpu_count=1, dangerous_accept_simulated_tee=True)
NETUID, BLOCK = 7, 5000
VALIDATORS = [Keypair.create_from_seed(bytes([i]) * 32) for i in range(1, 6)]
STAKES = (40.0, 30.0, 20.0, 5.0, 5.0)
MINER_KP = Keypair.create_from_seed(b"\x0a" * 32)
RULE = QuorumRule(min_validators=3, min_stake_fraction=0.5)


def snapshot() -> Metagraph:
    neurons = [Neuron(i, kp.ss58_address, kp.ss58_address, True, STAKES[i], None)
               for i, kp in enumerate(VALIDATORS)]
    # a miner with a lot of stake but no permit: its statements must not count
    neurons.append(Neuron(9, MINER_KP.ss58_address, MINER_KP.ss58_address, False, 1e6, None))
    return Metagraph(NETUID, BLOCK, tuple(neurons))


def statement(inst: InstanceIdentity, kp: Keypair, **kw: Any) -> SignedStatement:
    fields: dict[str, Any] = dict(
        netuid=NETUID, validator=kp.ss58_address, instance_id=inst.instance_id,
        chute_id=inst.chute_id,
        e2e_key_sha256=key_sha256(base64.b64decode(inst.e2e_pubkey)),
        receipt_key_sha256=key_sha256(base64.b64decode(inst.receipt_pubkey)),
        quote_sha256="c" * 64, policy_sha256="d" * 64, block=BLOCK - 10,
        expires_block=BLOCK + 60, simulated=True)
    fields.update(kw)
    return sign_statement(Statement(**fields), kp)


def wire(*stmts: SignedStatement) -> tuple[str, ...]:
    return tuple(json.dumps(s.to_wire(), separators=(",", ":")) for s in stmts)


def record(inst: InstanceIdentity, url: str, stmts: tuple[str, ...]) -> InstanceRecord:
    return dataclasses.replace(miner_record(inst, url), statements=stmts)


@pytest.fixture(scope="module")
def miner() -> Iterator[tuple[InstanceIdentity, str]]:
    thread, inst = start_real_miner(MODEL)
    try:
        yield inst, thread.url
    finally:
        thread.stop()


def sdk(gw_url: str, key: str, transport: httpx.BaseTransport) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw_url + "/v1", api_key=key, max_retries=0,
                         http_client=httpx.Client(transport=transport))


def quorum_client(inner: httpx.BaseTransport | None = None, **kw: Any) -> E2EETransport:
    kw.setdefault("policy", DEV)
    kw.setdefault("quorum", RULE)
    return E2EETransport(inner=inner, verify="quorum", metagraph=snapshot, **kw)


def refused(gw_url: str, key: str, t: E2EETransport) -> NoVerifiedInstanceError:
    with pytest.raises(NoVerifiedInstanceError) as info:  # raised through the SDK as is
        sdk(gw_url, key, t).chat.completions.create(model=MODEL, messages=MSG, max_tokens=2)
    return info.value


def test_quorum_reached_sends_once_and_pins(miner: tuple[InstanceIdentity, str]) -> None:
    inst, url = miner
    stmts = wire(*(statement(inst, kp) for kp in VALIDATORS[:3]))
    with gateway([record(inst, url, stmts)]) as gw:
        rec = Recorder()
        t = quorum_client(rec)
        client = sdk(gw.url, gw.key, t)
        for _ in range(2):
            assert client.chat.completions.create(model=MODEL, messages=MSG,
                                                  max_tokens=4).choices
        paths = rec.paths()
        assert paths.count(f"/e2e/statements/{inst.instance_id}") == 1  # pinned after
        assert paths.index(f"/e2e/statements/{inst.instance_id}") < paths.index("/e2e/invoke")
        assert gw.log.count("/e2e/attest/") == 0 and gw.log.count("/e2e/invoke") == 2
        assert all(b"launch code" not in body for _m, _p, body in rec.sent)
        assert t.rejected == []


def test_async_transport_in_quorum_mode(miner: tuple[InstanceIdentity, str]) -> None:
    inst, url = miner
    stmts = wire(*(statement(inst, kp) for kp in VALIDATORS[:3]))

    async def run(base: str, key: str) -> int:
        t = AsyncE2EETransport(key, verify="quorum", metagraph=snapshot, policy=DEV, quorum=RULE)
        async with httpx.AsyncClient(transport=t) as http:
            r = await http.post(base + "/v1/chat/completions",
                                json={"model": MODEL, "messages": MSG, "max_tokens": 2})
            return r.status_code

    with gateway([record(inst, url, stmts)]) as gw:
        assert asyncio.run(run(gw.url, gw.key)) == 200
        assert gw.log.count("/e2e/invoke") == 1


@pytest.mark.parametrize("case", ["low_stake", "non_permit", "duplicates", "forged",
                                  "expired", "future", "other_netuid", "none"])
def test_statements_that_do_not_count_leave_no_quorum(
        miner: tuple[InstanceIdentity, str], case: str) -> None:
    inst, url = miner
    good = [statement(inst, kp) for kp in VALIDATORS[:2]]  # 70 % of stake, 2 of 3 needed
    extra = {
        "low_stake": [],
        "non_permit": [statement(inst, MINER_KP)],
        "duplicates": [good[0], statement(inst, VALIDATORS[0], block=BLOCK - 5)],
        "forged": [dataclasses.replace(statement(inst, VALIDATORS[2]), statement=Statement(
            **{**dataclasses.asdict(statement(inst, VALIDATORS[2]).statement),
               "quote_sha256": "f" * 64}))],
        "expired": [statement(inst, VALIDATORS[2], block=BLOCK - 100,
                              expires_block=BLOCK - 1)],
        "future": [statement(inst, VALIDATORS[2], block=BLOCK + 1, expires_block=BLOCK + 9)],
        "other_netuid": [statement(inst, VALIDATORS[2], netuid=NETUID + 1)],
        "none": [],
    }[case]
    stmts = good + extra
    if case == "low_stake":  # three validators, but only 30 % of stake
        stmts = [statement(inst, kp) for kp in VALIDATORS[2:]]
    with gateway([record(inst, url, wire(*stmts))]) as gw:
        rec = Recorder()
        t = quorum_client(rec)
        err = refused(gw.url, gw.key, t)
        assert [(f.instance_id, f.reason) for f in err.failures] == \
            [(inst.instance_id, "quorum_not_reached")]
        assert "/e2e/invoke" not in rec.paths() and gw.log.count("/e2e/invoke") == 0
        # the application sees why the extra statements did not count
        assert NOT_COUNTED[case] in err.failures[0].detail


NOT_COUNTED = {
    "low_stake": "3 validator(s) with 30.0% of validator stake vouch",
    "non_permit": "not counted: no_permit x1", "duplicates": "not counted: duplicate x2",
    "forged": "not counted: bad_signature x1", "expired": "not counted: expired x1",
    "future": "not counted: expired x1", "other_netuid": "not counted: other_instance x1",
    "none": "2 validator(s) with 70.0% of validator stake vouch; need 3 and 50.0%",
}


def test_a_router_altering_statements_is_caught(miner: tuple[InstanceIdentity, str]) -> None:
    inst, url = miner
    stmts = wire(*(statement(inst, kp) for kp in VALIDATORS[:3]))

    def alter(body: dict[str, Any]) -> dict[str, Any]:
        for s in body["statements"]:
            s["statement"]["expires_block"] = BLOCK + 1000  # extend validity: signature breaks
        return body

    with gateway([record(inst, url, stmts)]) as gw:
        router = Rewriter("/e2e/statements/", alter)
        err = refused(gw.url, gw.key, quorum_client(router))
        assert err.failures[0].reason == "quorum_not_reached"
        assert "not counted: bad_signature x3" in err.failures[0].detail
        assert "/e2e/invoke" not in router.paths


def test_a_gateway_listing_another_key_is_caught(miner: tuple[InstanceIdentity, str]) -> None:
    """The quorum vouches for the miner's key; the gateway lists an unattested one."""
    inst, url = miner
    stmts = wire(*(statement(inst, kp) for kp in VALIDATORS[:3]))
    lying = dataclasses.replace(record(inst, url, stmts),
                                e2e_pubkey=KeyPair.generate().public_b64)
    with gateway([lying], compromised=True) as gw:
        rec = Recorder()
        t = quorum_client(rec)
        err = refused(gw.url, gw.key, t)
        assert [(f.instance_id, f.reason) for f in err.failures] == \
            [(inst.instance_id, "key_mismatch")]
        assert "/e2e/invoke" not in rec.paths()
        assert t.rejected[-1].reason == "key_mismatch"


def test_simulated_evidence_needs_the_explicit_opt_in(
        miner: tuple[InstanceIdentity, str]) -> None:
    inst, url = miner
    stmts = wire(*(statement(inst, kp) for kp in VALIDATORS[:3]))
    with gateway([record(inst, url, stmts)]) as gw:
        err = refused(gw.url, gw.key, quorum_client(policy=ClientPolicy.default()))
        assert err.failures[0].reason == "simulated"


def test_malformed_statements_are_a_typed_refusal(miner: tuple[InstanceIdentity, str]) -> None:
    inst, url = miner
    with gateway([record(inst, url, ('{"v":1}',))]) as gw:
        err = refused(gw.url, gw.key, quorum_client())
        assert err.failures[0].reason == "malformed_statements"


def test_quorum_mode_needs_the_clients_own_metagraph() -> None:
    with pytest.raises(ValueError, match="needs metagraph="):
        E2EETransport(verify="quorum")
    with pytest.raises(ValueError, match="need verify='quorum'"):
        E2EETransport(metagraph=snapshot)


def test_statements_endpoint_admission(miner: tuple[InstanceIdentity, str]) -> None:
    inst, url = miner
    stmts = wire(statement(inst, VALIDATORS[0]))
    with gateway([record(inst, url, stmts)]) as gw:
        path = f"{gw.url}/e2e/statements/{inst.instance_id}"
        auth = {"Authorization": f"Bearer {gw.key}"}
        assert httpx.get(path).status_code == 401
        assert httpx.get(f"{gw.url}/e2e/statements/{'0' * 32}", headers=auth).status_code == 404
        body = httpx.get(path, headers=auth).json()
        assert body == {"statements": [json.loads(stmts[0])]}


def test_validator_merge_keeps_other_validators_and_replaces_its_own(
        miner: tuple[InstanceIdentity, str]) -> None:
    from chutes_subnet.validator.statements import merge_statements
    inst, _url = miner
    mine_old = statement(inst, VALIDATORS[0], block=BLOCK - 50)
    other = statement(inst, VALIDATORS[1])
    stale = statement(inst, VALIDATORS[2], block=BLOCK - 100, expires_block=BLOCK - 1)
    other_key = statement(inst, VALIDATORS[3], e2e_key_sha256="0" * 64)
    mine = statement(inst, VALIDATORS[0])
    merged = merge_statements((*wire(mine_old, other, stale, other_key), "junk"), mine, BLOCK)
    assert [json.loads(t) for t in merged] == [mine.to_wire(), other.to_wire()]


class AgingSource:
    """A metagraph source like ``MetagraphCache``: a snapshot and its age in seconds."""

    def __init__(self, age: float | None) -> None:
        self.age = age

    def __call__(self) -> Metagraph | None:
        return snapshot() if self.age is not None else None


@pytest.mark.parametrize("age,reason", [
    (12.0 * 61, "quorum_not_reached"),   # statements expire at BLOCK + 60
    (12.0 * 101, "stale_metagraph"),     # the source stopped refreshing 101 blocks ago
    (None, "no_metagraph"),              # the source has no snapshot yet
])
def test_a_stuck_metagraph_source_does_not_freeze_time(
        miner: tuple[InstanceIdentity, str], age: float | None, reason: str) -> None:
    inst, url = miner
    stmts = wire(*(statement(inst, kp) for kp in VALIDATORS[:3]))
    with gateway([record(inst, url, stmts)]) as gw:
        t = E2EETransport(verify="quorum", metagraph=AgingSource(age), policy=DEV, quorum=RULE)
        err = refused(gw.url, gw.key, t)
        assert err.failures[0].reason == reason
        assert t.rejected[-1].reason == reason
        if reason == "quorum_not_reached":
            assert "expired x3" in err.failures[0].detail
    with gateway([record(inst, url, stmts)]) as gw:  # fresh enough: accepted
        t = E2EETransport(verify="quorum", metagraph=AgingSource(12.0 * 30), policy=DEV,
                          quorum=RULE)
        assert sdk(gw.url, gw.key, t).chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=2).choices
