"""btauth/1 gate (ValidatorGate), replay cache and MetagraphCache, with real wallets."""

from __future__ import annotations

import asyncio
import time

import pytest
from bittensor import http_auth

from chutes_subnet.auth import (
    BoundedNonceStore,
    MetagraphCache,
    ReplayCacheFull,
    ValidatorGate,
    sign_headers,
)
from chutes_subnet.chain import LocalChain, Metagraph, Neuron
from chutes_subnet.errors import AuthenticationError, ChainError, PermissionDenied
from chutes_subnet.single_use import Use
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58

PATH = "/attest"
BODY = b'{"nonce": "00"}'


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("wallets"))
    names = ("miner", "validator", "weak", "nopermit", "stranger")
    return {name: ensure_dev_wallet(name, "hot", root) for name in names}


@pytest.fixture
def metagraph(keys) -> Metagraph:
    def neuron(uid, name, permit, stake):
        w = keys[name]
        return Neuron(uid, hotkey_ss58(w), coldkey_ss58(w), permit, stake, None)

    return Metagraph(
        netuid=1,
        block=10,
        neurons=(
            neuron(0, "miner", False, 0.0),
            neuron(1, "validator", True, 5000.0),
            neuron(2, "weak", True, 10.0),
            neuron(3, "nopermit", False, 9000.0),
        ),
    )


@pytest.fixture
def gate(keys, metagraph) -> ValidatorGate:
    return ValidatorGate(hotkey_ss58(keys["miner"]), lambda: metagraph, min_stake=100.0)


def _signed(keys, sender="validator", receiver="miner", body=BODY, path=PATH, method="POST"):
    return sign_headers(keys[sender], method=method, path=path, body=body,
                        receiver_ss58=hotkey_ss58(keys[receiver]))


def _reason(excinfo) -> str:
    return excinfo.value.reason


def test_good_signature_from_a_permitted_validator_is_accepted(gate, keys):
    neuron = gate.authorize(_signed(keys), BODY, method="POST", path=PATH)
    assert neuron.uid == 1 and neuron.hotkey == hotkey_ss58(keys["validator"])


def test_header_names_are_case_insensitive(gate, keys):
    headers = {k.lower(): v for k, v in _signed(keys).items()}
    assert gate.authorize(headers, BODY, method="post", path=PATH).uid == 1


def test_unsigned_request_is_401(gate):
    with pytest.raises(AuthenticationError) as excinfo:
        gate.authorize({}, BODY, method="POST", path=PATH)
    assert _reason(excinfo) == "malformed"


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda h: h.update({http_auth.HEADER_SIGNATURE: "0x" + "00" * 64}), "bad_signature"),
        (lambda h: h.update({http_auth.HEADER_SIGNATURE: "zz"}), "malformed"),
        (lambda h: h.update({http_auth.HEADER_NONCE: "soon"}), "malformed"),
        (lambda h: h.update({http_auth.HEADER_VERSION: "2"}), "malformed"),
        (lambda h: h.update({http_auth.HEADER_HOTKEY: "not-an-address"}), "malformed"),
        (lambda h: h.pop(http_auth.HEADER_RECEIVER), "wrong_receiver"),
    ],
)
def test_tampered_headers_are_401(gate, keys, mutate, reason):
    headers = _signed(keys)
    mutate(headers)
    with pytest.raises(AuthenticationError) as excinfo:
        gate.authorize(headers, BODY, method="POST", path=PATH)
    assert _reason(excinfo) == reason


def test_signature_binds_body_path_and_method(gate, keys):
    for body, path, method in ((b"{}", PATH, "POST"), (BODY, "/other", "POST"),
                               (BODY, PATH, "GET")):
        with pytest.raises(AuthenticationError) as excinfo:
            gate.authorize(_signed(keys), body, method=method, path=path)
        assert _reason(excinfo) == "bad_signature"


def test_request_for_another_miner_is_401(gate, keys):
    with pytest.raises(AuthenticationError) as excinfo:
        gate.authorize(_signed(keys, receiver="weak"), BODY, method="POST", path=PATH)
    assert _reason(excinfo) == "wrong_receiver"


def test_replay_is_401(gate, keys):
    headers = _signed(keys)
    gate.authorize(headers, BODY, method="POST", path=PATH)
    with pytest.raises(AuthenticationError) as excinfo:
        gate.authorize(headers, BODY, method="POST", path=PATH)
    assert _reason(excinfo) == "replayed"


def test_stale_and_future_requests_are_401(gate, keys):
    now = time.time_ns()
    for nonce in (now - 11 * 10**9, now + 3 * 10**9):
        headers = http_auth.sign(keys["validator"], method="POST", path=PATH, body=BODY,
                                 receiver_ss58=hotkey_ss58(keys["miner"]), nonce_ns=nonce)
        with pytest.raises(AuthenticationError) as excinfo:
            gate.authorize(headers, BODY, method="POST", path=PATH, now_ns=now)
        assert _reason(excinfo) == "stale"


def test_bad_signature_does_not_poison_the_replay_cache(gate, keys):
    headers = _signed(keys)
    forged = dict(headers, **{http_auth.HEADER_SIGNATURE: "0x" + "11" * 64})
    with pytest.raises(AuthenticationError):
        gate.authorize(forged, BODY, method="POST", path=PATH)
    assert gate.authorize(headers, BODY, method="POST", path=PATH).uid == 1


@pytest.mark.parametrize(
    "sender, message",
    [("stranger", "not registered"), ("nopermit", "no validator permit"),
     ("weak", "below the minimum")],
)
def test_authenticated_but_not_allowed_is_403(gate, keys, sender, message):
    with pytest.raises(PermissionDenied, match=message):
        gate.authorize(_signed(keys, sender=sender), BODY, method="POST", path=PATH)


def test_refused_senders_never_enter_the_replay_cache(keys, metagraph):
    """Issue 17: a registered non-validator must not be able to fill the cache."""
    store = BoundedNonceStore(retention=60.0, max_entries=3)
    gate = ValidatorGate(hotkey_ss58(keys["miner"]), lambda: metagraph, min_stake=100.0,
                         nonce_store=store)
    for sender in ("nopermit", "weak", "stranger") * 3:
        with pytest.raises(PermissionDenied):
            gate.authorize(_signed(keys, sender=sender), BODY, method="POST", path=PATH)
    assert len(store) == 0
    headers = _signed(keys)
    gate.authorize(headers, BODY, method="POST", path=PATH)
    assert len(store) == 1
    with pytest.raises(AuthenticationError) as excinfo:        # replays are still caught
        gate.authorize(headers, BODY, method="POST", path=PATH)
    assert _reason(excinfo) == "replayed"


def test_a_full_replay_cache_is_busy_not_replayed(keys, metagraph):
    store = BoundedNonceStore(retention=60.0, max_entries=2)
    gate = ValidatorGate(hotkey_ss58(keys["miner"]), lambda: metagraph, min_stake=100.0,
                         nonce_store=store)
    for _ in range(2):
        gate.authorize(_signed(keys), BODY, method="POST", path=PATH)
    with pytest.raises(ReplayCacheFull, match="busy"):
        gate.authorize(_signed(keys), BODY, method="POST", path=PATH)


def test_no_metagraph_yet_is_403(keys):
    gate = ValidatorGate(hotkey_ss58(keys["miner"]), lambda: None)
    with pytest.raises(PermissionDenied, match="not loaded"):
        gate.authorize(_signed(keys), BODY, method="POST", path=PATH)


def test_error_messages_do_not_echo_secrets(gate, keys):
    headers = _signed(keys)
    signature = headers[http_auth.HEADER_SIGNATURE]
    headers[http_auth.HEADER_NONCE] = str(int(headers[http_auth.HEADER_NONCE]) + 1)
    with pytest.raises(AuthenticationError) as excinfo:
        gate.authorize(headers, BODY, method="POST", path=PATH)
    text = str(excinfo.value)
    assert signature[2:] not in text and BODY.decode() not in text


def test_gate_configuration_is_checked(keys, metagraph):
    with pytest.raises(ValueError):
        ValidatorGate("", lambda: metagraph)
    with pytest.raises(ValueError):
        ValidatorGate("x", lambda: metagraph, nonce_store=BoundedNonceStore(retention=5.0))
    with pytest.raises(ValueError):
        sign_headers(keys["validator"], method="POST", path=PATH, body=BODY, receiver_ss58="")


def test_bounded_nonce_store_expires_and_caps():
    store = BoundedNonceStore(retention=0.05, max_entries=3)
    assert store.consume(("a", 1)) is Use.ACCEPTED and store.consume(("a", 1)) is Use.USED
    assert store.check_and_store("a", 2) and store.check_and_store("b", 1)  # the SDK's view
    assert store.consume(("c", 1)) is Use.FULL  # full of live entries: fail closed
    assert not store.check_and_store("c", 1)
    time.sleep(0.06)
    assert store.check_and_store("c", 1) and len(store) == 1


class FlakyChain:
    """A Chain double whose metagraph read fails on demand (no network here)."""

    netuid = 1

    def __init__(self, inner: LocalChain) -> None:
        self.inner = inner
        self.fail: Exception | None = None
        self.calls = 0

    async def metagraph(self) -> Metagraph:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return await self.inner.metagraph()


async def _until(condition, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_metagraph_cache_refreshes_and_survives_errors(caplog):
    local = LocalChain(":memory:", block_time=0)
    local.register("v", "ck", validator_permit=True)
    flaky = FlakyChain(local)
    cache = MetagraphCache(flaky, interval=0.05)  # type: ignore[arg-type]
    assert cache.current is None and cache() is None and cache.age is None
    async with cache:
        first = await cache.wait_ready(timeout=1)
        assert [n.hotkey for n in first.neurons] == ["v"]
        flaky.fail = ChainError("node unreachable")
        local.register("m", "ck")
        calls = flaky.calls
        await _until(lambda: flaky.calls >= calls + 2)
        assert cache.current is first and cache.failures >= 2  # last good snapshot kept
        assert "node unreachable" in caplog.text
        flaky.fail = RuntimeError("bug")
        await cache.refresh()
        flaky.fail = None
        await _until(lambda: cache.current is not first)
        assert [n.hotkey for n in cache().neurons] == ["v", "m"]
    assert cache._task is None
    local.close()


async def test_metagraph_cache_start_survives_an_initial_failure():
    local = LocalChain(":memory:", block_time=0)
    flaky = FlakyChain(local)
    flaky.fail = ChainError("down")
    cache = MetagraphCache(flaky, interval=0.05)  # type: ignore[arg-type]
    await cache.start()
    assert cache.current is None
    with pytest.raises(asyncio.TimeoutError):
        await cache.wait_ready(timeout=0.01)
    flaky.fail = None
    assert (await cache.wait_ready(timeout=1)).netuid == 1
    await cache.stop()
    await cache.stop()
    local.close()
