"""GET /fleet on a real miner (uvicorn on loopback): the signed list of the instances its
hotkey fronts, this instance first; configuration refusals; re-signing."""

from __future__ import annotations

import time

import httpx
import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.auth import hotkey_signer
from chutes_subnet.errors import FleetError
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import MinerConfig, create_app
from chutes_subnet.miner.cli import build_parser, config_from_args
from chutes_subnet.miner.fleet import FleetPublisher, fleet_entries
from chutes_subnet.wallets import ensure_dev_wallet, hotkey_ss58
from chutes_subnet.wire.fleet_signing import verify_fleet
from chutes_subnet.wire.protocol import FLEET_PATH, MAX_FLEET_INSTANCES
from tests.servers import UvicornThread, free_port

NETUID = 7
SIBLINGS = ("http://127.0.0.1:18092", "http://10.1.2.3:8091/")


@pytest.fixture(scope="module")
def wallets(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("wallets"))
    return ensure_dev_wallet("front", "default", d), ensure_dev_wallet("other", "default", d)


def _app(wallet, *, port: int, signer=None, siblings=(), **kw):
    kw.setdefault("host", "127.0.0.1")
    config = MinerConfig(port=port, tee="simulated", invoke_auth="none",
                         fleet_instances=tuple(siblings), **kw)
    return create_app(config, hotkey_ss58=hotkey_ss58(wallet), backend=make_backend("embedded"),
                      provider=SimulatedProvider(), gate=None, fleet_signer=signer,
                      netuid=NETUID)


def test_front_serves_itself_then_its_siblings_signed_by_the_hotkey(wallets):
    front, _ = wallets
    port = free_port()
    app = _app(front, port=port, signer=hotkey_signer(front), siblings=SIBLINGS)
    with UvicornThread(app, port=port) as server:
        resp = httpx.get(server.url + FLEET_PATH, timeout=10)
        again = httpx.get(server.url + FLEET_PATH, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.headers["cache-control"] == "no-store"
    fleet = verify_fleet(resp.content, hotkey=hotkey_ss58(front), netuid=NETUID, now=time.time())
    assert [(i.url, i.instance_id) for i in fleet.instances] == [
        (f"http://127.0.0.1:{port}", app.state.instance.instance_id),
        ("http://127.0.0.1:18092", None), ("http://10.1.2.3:8091", None)]
    assert again.content == resp.content  # cached: no signature per request
    with pytest.raises(FleetError, match="another hotkey"):
        verify_fleet(resp.content, hotkey=hotkey_ss58(wallets[1]), netuid=NETUID,
                     now=time.time())


def test_a_single_instance_lists_itself_and_a_miner_without_a_signer_serves_no_list(wallets):
    front, _ = wallets
    port = free_port()
    with UvicornThread(_app(front, port=port, signer=hotkey_signer(front)), port=port) as s:
        fleet = verify_fleet(httpx.get(s.url + FLEET_PATH, timeout=10).content,
                             hotkey=hotkey_ss58(front), netuid=NETUID, now=time.time())
    assert [i.url for i in fleet.instances] == [f"http://127.0.0.1:{port}"]
    port = free_port()
    with UvicornThread(_app(front, port=port), port=port) as s:
        assert httpx.get(s.url + FLEET_PATH, timeout=10).status_code == 404


def test_refusals_at_start(wallets):
    front, other = wallets
    with pytest.raises(ValueError, match="not this miner's hotkey"):
        _app(front, port=free_port(), signer=hotkey_signer(other))
    with pytest.raises(ValueError, match="instance URL"):
        _app(front, port=free_port(), signer=hotkey_signer(front), siblings=["ftp://x:1"])
    with pytest.raises(ValueError, match="twice"):
        MinerConfig(fleet_instances=("http://10.9.9.9:1", "http://10.9.9.9:1/"))
    with pytest.raises(ValueError, match="at most"):
        MinerConfig(fleet_instances=tuple(f"http://10.0.{i // 250}.{i % 250}:1"
                                          for i in range(MAX_FLEET_INSTANCES)))
    with pytest.raises(ValueError, match="fleet_ttl"):
        MinerConfig(fleet_ttl=0)
    # an instance listing itself as a sibling names one instance twice
    with pytest.raises(ValueError, match="twice"):
        fleet_entries("http://127.0.0.1:9", "ab" * 16, ["http://127.0.0.1:9/"])
    # a front with siblings must have an address of its own to list
    with pytest.raises(ValueError, match="external_ip"):
        _app(front, port=free_port(), signer=hotkey_signer(front), siblings=SIBLINGS,
             host="0.0.0.0")


def test_the_list_is_resigned_after_half_its_validity(wallets):
    front, _ = wallets
    now = [1_000_000.0]
    pub = FleetPublisher(hotkey_signer(front), netuid=NETUID, ttl=100, clock=lambda: now[0],
                         entries=fleet_entries("http://127.0.0.1:9", "ab" * 16, ()))
    first = pub.current()
    now[0] += 49
    assert pub.current() == first
    now[0] += 2
    second = pub.current()
    assert second != first
    fleet = verify_fleet(second, hotkey=hotkey_ss58(front), netuid=NETUID, now=now[0])
    assert fleet.issued_at == int(now[0]) and fleet.expires_at == int(now[0]) + 100


def test_cli_flags(monkeypatch):
    monkeypatch.setenv("CHUTES_MINER_FLEET_TTL", "300")
    args = build_parser().parse_args(
        ["--fleet.instances", " http://10.0.0.2:8091, http://10.0.0.3:8091 ,",
         "--subtensor.network", "local"])
    cfg = config_from_args(args)
    assert cfg.fleet_instances == ("http://10.0.0.2:8091", "http://10.0.0.3:8091")
    assert cfg.fleet_ttl == 300
    args = build_parser().parse_args(["--fleet.instances", "http://10.0.0.9:1/path",
                                      "--subtensor.network", "local"])
    with pytest.raises(SystemExit, match="no path"):
        config_from_args(args)


@pytest.mark.parametrize(("me", "front"), [("chutes-miner-0", True), ("chutes-miner-1", False)])
def test_the_front_is_named_and_every_other_instance_is_a_sibling(me, front):
    args = build_parser().parse_args(
        ["--fleet.instances", "http://10.0.0.2:8091", "--fleet.front", "chutes-miner-0",
         "--fleet.self", me, "--subtensor.network", "local"])
    cfg = config_from_args(args)
    assert cfg.serve_axon is front
    assert cfg.fleet_instances == (("http://10.0.0.2:8091",) if front else ())
    args = build_parser().parse_args(["--fleet.front", "x", "--subtensor.network", "local"])
    with pytest.raises(SystemExit, match="go together"):
        config_from_args(args)
