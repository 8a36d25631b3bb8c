"""The signed instance list (GET /fleet): one contract, signed by the hotkey, fail closed."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chutes_subnet.auth import hotkey_signer
from chutes_subnet.errors import FleetError
from chutes_subnet.wallets import ensure_dev_wallet, hotkey_ss58
from chutes_subnet.wire.fleet_signing import canonical_bytes, fleet_json, sign_fleet, verify_fleet
from chutes_subnet.wire.messages import FleetInstance, FleetList, SignedFleet
from chutes_subnet.wire.protocol import (
    MAX_FLEET_BYTES,
    MAX_FLEET_INSTANCES,
    MAX_FLEET_VALIDITY_SECONDS,
    canonical_instance_url,
)

NETUID = 7
IID = "ab" * 16


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("wallets"))
    a, b = ensure_dev_wallet("fleet-a", "default", d), ensure_dev_wallet("fleet-b", "default", d)
    return hotkey_signer(a), hotkey_ss58(a), hotkey_signer(b), hotkey_ss58(b)


def _entries(n: int = 3) -> list[FleetInstance]:
    return [FleetInstance(url=f"http://10.0.0.{i + 1}:8091", instance_id=IID if i == 0 else None)
            for i in range(n)]


def _signed(signer, *, n: int = 3, issued_at: int | None = None, ttl: int = 600,
            netuid: int = NETUID) -> bytes:
    now = int(time.time()) if issued_at is None else issued_at
    return fleet_json(sign_fleet(signer, netuid=netuid, instances=_entries(n), issued_at=now,
                                 ttl_seconds=ttl))


def _code(raw: bytes, hotkey: str, now: float | None = None) -> str:
    with pytest.raises(FleetError) as err:
        verify_fleet(raw, hotkey=hotkey, netuid=NETUID, now=time.time() if now is None else now)
    assert str(err.value)  # one line, names the defect
    return err.value.code


def test_a_signed_list_verifies_for_its_hotkey(keys):
    signer, hotkey, *_ = keys
    fleet = verify_fleet(_signed(signer), hotkey=hotkey, netuid=NETUID, now=time.time())
    assert fleet.hotkey == hotkey and fleet.netuid == NETUID
    assert [i.url for i in fleet.instances] == [f"http://10.0.0.{i}:8091" for i in (1, 2, 3)]
    assert fleet.instances[0].instance_id == IID and fleet.instances[1].instance_id is None


def test_canonical_bytes_are_domain_separated_and_sorted(keys):
    signer, *_ = keys
    raw = json.loads(_signed(signer, issued_at=1_000, ttl=60))
    fleet = verify_fleet(json.dumps(raw).encode(), hotkey=raw["fleet"]["hotkey"],
                         netuid=NETUID, now=1_010)
    data = canonical_bytes(fleet)
    assert data.startswith(b"chutes-subnet/fleet/1\n")
    assert json.loads(data.split(b"\n", 1)[1]) == raw["fleet"]
    assert b" " not in data.split(b"\n", 1)[1]


def test_another_hotkeys_list_is_refused(keys):
    signer_a, _hk_a, _signer_b, hk_b = keys
    assert _code(_signed(signer_a), hk_b) == "wrong_hotkey"


def test_a_list_relabelled_to_the_uids_hotkey_fails_its_signature(keys):
    signer_a, _hk_a, _signer_b, hk_b = keys
    raw = json.loads(_signed(signer_a))
    raw["fleet"]["hotkey"] = hk_b
    assert _code(json.dumps(raw).encode(), hk_b) == "bad_signature"


@pytest.mark.parametrize("edit", [
    lambda d: d["fleet"]["instances"].append({"url": "http://6.6.6.6:1", "instance_id": None}),
    lambda d: d["fleet"]["instances"].pop(),
    lambda d: d["fleet"].__setitem__("expires_at", d["fleet"]["expires_at"] + 1),
    lambda d: d["fleet"]["instances"][1].__setitem__("instance_id", "cd" * 16),
    lambda d: d.__setitem__("signature", ("0" if d["signature"][0] != "0" else "1")
                            + d["signature"][1:]),
])
def test_any_change_to_a_signed_list_is_refused(keys, edit):
    signer, hotkey, *_ = keys
    raw = json.loads(_signed(signer))
    edit(raw)
    assert _code(json.dumps(raw).encode(), hotkey) == "bad_signature"


@pytest.mark.parametrize("edit", [
    lambda d: d.pop("signature"),                                     # unsigned
    lambda d: d.__setitem__("signature", ""),
    lambda d: d.__setitem__("v", 2),
    lambda d: d["fleet"].__setitem__("netuid", "7"),                  # no coercion
    lambda d: d["fleet"].__setitem__("issued_at", True),
    lambda d: d["fleet"].__setitem__("extra", 1),                     # unsigned extra keys
    lambda d: d["fleet"].__setitem__("instances", []),
    lambda d: d["fleet"]["instances"][1].__setitem__("url", "http://10.0.0.1:8091"),  # twice
    lambda d: d["fleet"]["instances"][1].__setitem__("url", "http://10.0.0.2:8091/x"),
    lambda d: d["fleet"]["instances"][1].__setitem__("url", "http://u@10.0.0.2:8091"),
    lambda d: d["fleet"]["instances"][1].__setitem__("url", "HTTP://10.0.0.2:8091"),  # spelling
    lambda d: d["fleet"]["instances"][1].__setitem__("url", "file:///etc/passwd"),
    lambda d: d["fleet"]["instances"][1].__setitem__("instance_id", "XYZ"),
    lambda d: d["fleet"]["instances"][1].__setitem__("instance_id", "ab" * 16),  # id twice
])
def test_malformed_lists_are_refused(keys, edit):
    signer, hotkey, *_ = keys
    raw = json.loads(_signed(signer))
    edit(raw)
    assert _code(json.dumps(raw).encode(), hotkey) == "malformed"


def test_time_and_subnet_bounds(keys):
    signer, hotkey, *_ = keys
    now = int(time.time())
    assert _code(_signed(signer, issued_at=now - 700, ttl=600), hotkey, now) == "expired"
    assert _code(_signed(signer, issued_at=now + 3600), hotkey, now) == "not_yet_valid"
    assert _code(_signed(signer, netuid=8), hotkey, now) == "wrong_netuid"
    # a validly signed list claiming more than the longest validity (a hand-made signer)
    long = FleetList(netuid=NETUID, hotkey=hotkey, instances=_entries(), issued_at=now,
                     expires_at=now + MAX_FLEET_VALIDITY_SECONDS + 1)
    raw = SignedFleet(v=1, fleet=long, signature=bytes(signer.sign(canonical_bytes(long))).hex())
    assert _code(fleet_json(raw), hotkey, now) == "too_long_valid"
    with pytest.raises(ValueError, match="ttl_seconds"):
        sign_fleet(signer, netuid=NETUID, instances=_entries(), issued_at=now,
                   ttl_seconds=MAX_FLEET_VALIDITY_SECONDS + 1)


def test_size_and_count_bounds(keys):
    signer, hotkey, *_ = keys
    full = _signed(signer, n=MAX_FLEET_INSTANCES)
    assert len(verify_fleet(full, hotkey=hotkey, netuid=NETUID, now=time.time()).instances) \
        == MAX_FLEET_INSTANCES
    assert len(full) <= MAX_FLEET_BYTES
    with pytest.raises(ValueError, match="instances"):
        _signed(signer, n=MAX_FLEET_INSTANCES + 1)
    raw = json.loads(full)
    raw["fleet"]["instances"].append({"url": "http://9.9.9.9:1", "instance_id": None})
    assert _code(json.dumps(raw).encode(), hotkey) == "malformed"
    assert _code(full + b" " * MAX_FLEET_BYTES, hotkey) == "too_large"
    assert _code(b"[" * 100_000, hotkey) == "too_large"
    assert _code(b"[" * 20_000, hotkey) == "malformed"  # deep nesting under the size bound


@pytest.mark.parametrize(("url", "canon"), [
    ("http://127.0.0.1:8091", "http://127.0.0.1:8091"),
    ("http://127.0.0.1:8091/", "http://127.0.0.1:8091"),
    ("HTTPS://10.0.0.1", "https://10.0.0.1:443"),
    ("http://[::1]:9", "http://[::1]:9"),
    ("http://[0:0:0:0:0:0:0:1]:9", "http://[::1]:9"),
])
def test_instance_urls_have_one_spelling(url, canon):
    assert canonical_instance_url(url) == canon


@pytest.mark.parametrize("url", [
    "", "ftp://h:1", "http://h:1/p", "http://h:1?q", "http://h:1#f", "http://a@h:1",
    "http://0.0.0.0:1", "http://1.2.3.4:0", "http://1.2.3.4:70000", "http://h h:1",
    "http://localhost:1", "http://miner.example.com:8091", "http://[::]:1",
    "http://224.0.0.1:1", "http://" + "1" * 300 + ":1", "http://1.2.3.4\\@evil:1",
])
def test_bad_instance_urls_are_refused(url):
    with pytest.raises(ValueError):
        canonical_instance_url(url)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=2048) | st.builds(
    lambda d: json.dumps(d).encode(),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(
                     st.sampled_from(["v", "fleet", "signature", "instances", "url"]), c,
                     max_size=4), max_leaves=20)))
def test_arbitrary_bytes_raise_only_fleet_errors(keys, raw):
    _s, hotkey, *_ = keys
    with pytest.raises(FleetError):
        verify_fleet(raw, hotkey=hotkey, netuid=NETUID, now=time.time())
