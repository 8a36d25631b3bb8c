"""The chute registry through the gateway, on loopback with real miners: deploy and
update (owner only, audited), private chutes invisible (404) to keys outside their
allowlist on every endpoint, retired and unregistered chutes never discovered."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.registry.chute_store import SQLChuteStore
from chutes_subnet.stores.database import SQLiteDatabase
from chutes_subnet.wire.call import SealTarget, seal_call
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.chute_fixtures import chute_dict
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import UvicornThread

PUBLIC, PRIVATE, ROGUE = "acme/public-1", "acme/private-1", "nobody/unregistered"


@dataclass
class Env:
    gw: str
    owner: dict[str, str]
    friend: dict[str, str]
    outsider: dict[str, str]
    friend_id: str
    store: SQLChuteStore


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    db = SQLiteDatabase(Path(tmp_path_factory.mktemp("chutes")) / "gw.db")
    store = SQLChuteStore(db, cache_seconds=0)
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    owner, _ = keys.create("owner")
    friend, friend_key = keys.create("friend")
    outsider, _ = keys.create("outsider")
    miners = [start_real_miner(m) for m in (PUBLIC, PRIVATE, ROGUE)]
    for i, (server, inst) in enumerate(miners):
        registry.upsert(miner_record(inst, server.url, uid=i + 1))
    app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                     keys=keys, usage=MemoryUsageMeter(), chutes=store)
    try:
        with UvicornThread(app) as gw:
            yield Env(gw.url, _auth(owner), _auth(friend), _auth(outsider), friend_key.key_id,
                      store)
    finally:
        for server, _ in miners:
            server.stop()
        db.close()


def _deploy(env: Env, spec: dict, who: dict[str, str]) -> httpx.Response:
    return httpx.post(env.gw + "/v1/chutes", json=spec, headers=who, timeout=10)


def _invoke(env: Env, chute: str, who: dict[str, str], target: dict | None = None):
    """A sealed v2 request for ``chute`` (to ``target`` when discovery is refused)."""
    listed = httpx.get(f"{env.gw}/e2e/instances/{chute}", headers=who, timeout=10)
    info = target or listed.json()["instances"][0]
    offer = SealTarget(info["instance_id"], base64.b64decode(info["e2e_pubkey"]), (2,))
    call = seal_call(offer, chute_id=chute, nonce=(info.get("nonces") or ["0" * 32])[0],
                     path="/v1/completions", stream=False,
                     payload={"prompt": "hi", "max_tokens": 2}, version=2)
    return listed, httpx.post(f"{env.gw}/e2e/invoke", headers={**call.headers, **who},
                              content=call.body, timeout=30)


def test_deploy_update_and_the_audit_log(env: Env) -> None:
    first = _deploy(env, chute_dict(PUBLIC), env.owner)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["chute_id"] == chute_id_for_model(PUBLIC) and body["version"] == 1
    assert _deploy(env, chute_dict(PUBLIC), env.owner).json()["version"] == 1  # idempotent
    cheaper = chute_dict(PUBLIC, prices={"prompt_rao_per_mtok": 1})
    updated = _deploy(env, cheaper, env.owner)
    assert updated.status_code == 200 and updated.json()["version"] == 2
    hist = httpx.get(f"{env.gw}/v1/chutes/{body['chute_id']}/history", headers=env.outsider)
    assert [c["action"] for c in hist.json()["changes"]] == ["deploy", "update"]


@pytest.mark.parametrize("spec,needle", [
    (chute_dict("acme/x", image_digest="latest"), "image_digest must be"),
    (chute_dict("acme/x", prices={"prompt_rao_per_mtok": -5}), "prices.prompt_rao_per_mtok"),
    ({**chute_dict("acme/x"), "manifest": {"model_id": "acme/x"}}, "missing manifest fields"),
])
def test_bad_specs_are_400_and_store_nothing(env: Env, spec: dict, needle: str) -> None:
    r = _deploy(env, spec, env.owner)
    assert r.status_code == 400 and r.json()["reason"] == "bad_chute_spec"
    assert needle in r.json()["error"]
    assert env.store.get(chute_id_for_model("acme/x")) is None
    raw = httpx.post(env.gw + "/v1/chutes", content=b"{nope", headers=env.owner)
    assert raw.status_code == 400 and raw.json()["error"] == "body is not JSON"
    assert httpx.post(env.gw + "/v1/chutes", json=chute_dict("acme/x")).status_code == 401


def test_only_the_owner_changes_a_public_chute(env: Env) -> None:
    _deploy(env, chute_dict(PUBLIC), env.owner)
    before = env.store.get(chute_id_for_model(PUBLIC))
    hijack = _deploy(env, chute_dict(PUBLIC, prices={"prompt_rao_per_mtok": 0}), env.outsider)
    assert hijack.status_code == 403 and hijack.json()["reason"] == "not_owner"
    gone = httpx.delete(f"{env.gw}/v1/chutes/{before.chute_id}", headers=env.outsider)
    assert gone.status_code == 403
    assert env.store.get(before.chute_id) == before


def test_a_private_chute_is_invisible_outside_its_allowlist(env: Env) -> None:
    spec = chute_dict(PRIVATE, visibility="private", allow=[env.friend_id])
    assert _deploy(env, spec, env.owner).status_code == 201
    cid = chute_id_for_model(PRIVATE)
    unknown = {"error": "no such chute", "reason": "unknown_chute"}
    # the outsider: every endpoint answers exactly as for a chute that does not exist
    for url in (f"/v1/chutes/{cid}", f"/v1/chutes/{cid}/history", f"/e2e/instances/{cid}"):
        r = httpx.get(env.gw + url, headers=env.outsider)
        assert (r.status_code, r.json()) == (404, unknown), url
        nothing = httpx.get(env.gw + url.replace(cid, chute_id_for_model("no/such")),
                            headers=env.outsider)
        assert (nothing.status_code, nothing.json()) == (404, unknown)
    owner_view = httpx.get(f"{env.gw}/e2e/instances/{cid}", headers=env.owner).json()
    _, invoked = _invoke(env, cid, env.outsider, target=owner_view["instances"][0])
    assert (invoked.status_code, invoked.json()) == (404, unknown)
    assert httpx.delete(f"{env.gw}/v1/chutes/{cid}", headers=env.outsider).status_code == 404
    iid, challenge = owner_view["instances"][0]["instance_id"], {"nonce": "ab" * 32}
    relayed = httpx.post(f"{env.gw}/e2e/attest/{iid}", json=challenge, headers=env.outsider)
    assert relayed.status_code == 404 and relayed.json()["reason"] == "unknown_instance"
    ok = httpx.post(f"{env.gw}/e2e/attest/{iid}", json=challenge, headers=env.friend, timeout=30)
    assert ok.status_code == 200 and ok.json()["instance_id"] == iid
    hijack = _deploy(env, spec, env.outsider)
    assert (hijack.status_code, hijack.json()) == (404, unknown)
    def names(who: dict[str, str]) -> set[str]:
        return {c["name"] for c in httpx.get(env.gw + "/v1/chutes", headers=who).json()["data"]}

    assert PRIVATE not in names(env.outsider) and PRIVATE in names(env.friend)

    def models(who: dict[str, str]) -> set[str]:
        return {m["id"] for m in httpx.get(env.gw + "/v1/models", headers=who).json()["data"]}

    assert PRIVATE not in models(env.outsider) and PRIVATE in models(env.owner)
    assert PRIVATE not in models({})
    serving = httpx.get(env.gw + "/v1/chutes/serving").json()["data"]
    assert PRIVATE not in {c["name"] for c in serving}
    # the owner and the allowlisted friend use it; the friend does not see the allowlist
    for who in (env.owner, env.friend):
        _, ok = _invoke(env, cid, who)
        assert ok.status_code == 200, ok.text
    shown = httpx.get(f"{env.gw}/v1/chutes/{cid}", headers=env.friend).json()
    assert "allow" not in shown and "owner" not in shown
    assert httpx.get(f"{env.gw}/v1/chutes/{cid}", headers=env.owner).json()["allow"] == [
        env.friend_id]


def test_unregistered_and_retired_chutes_are_not_discovered(env: Env) -> None:
    rogue = chute_id_for_model(ROGUE)  # a miner serves it, nobody deployed it
    r = httpx.get(f"{env.gw}/e2e/instances/{rogue}", headers=env.owner)
    assert r.status_code == 404 and r.json()["reason"] == "unknown_chute"
    assert ROGUE not in {m["id"] for m in httpx.get(env.gw + "/v1/models").json()["data"]}
    _deploy(env, chute_dict(PUBLIC), env.owner)
    cid = chute_id_for_model(PUBLIC)
    assert httpx.get(f"{env.gw}/e2e/instances/{cid}", headers=env.owner).status_code == 200
    retired = httpx.delete(f"{env.gw}/v1/chutes/{cid}", headers=env.owner)
    assert retired.status_code == 200 and retired.json()["retired"] is True
    assert httpx.get(f"{env.gw}/e2e/instances/{cid}", headers=env.owner).status_code == 404
    assert httpx.get(f"{env.gw}/v1/chutes/{cid}", headers=env.outsider).status_code == 404
    back = _deploy(env, chute_dict(PUBLIC), env.owner)
    assert back.status_code == 200 and back.json()["retired"] is False
    assert httpx.get(f"{env.gw}/e2e/instances/{cid}", headers=env.owner).status_code == 200


def test_cli_deploy_list_show_history_retire(env: Env, tmp_path: Path, capsys) -> None:
    import json

    from chutes_subnet.cli import main
    from tests.chute_fixtures import IMAGE

    name = "acme/cli-model"
    toml = tmp_path / "chute.toml"
    m = chute_dict(name)["manifest"]
    toml.write_text(f'name = "{name}"\nimage_digest = "{IMAGE}"\n[manifest]\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in m.items()))
    secret = env.owner["Authorization"].split()[1]
    base = ["chutes", "--gateway", env.gw, "--api-key", secret]

    def run(*argv: str) -> tuple[int, object, str]:
        code = main([*base, *argv])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err

    code, out, _ = run("deploy", str(toml))
    assert code == 0 and out["version"] == 1 and out["chute_id"] == chute_id_for_model(name)
    code, out, _ = run("list")
    assert code == 0 and name in {c["name"] for c in out}
    code, out, _ = run("show", name)
    assert code == 0 and out["manifest"]["model_id"] == name
    code, out, _ = run("retire", name)
    assert code == 0 and out["retired"] is True
    code, out, _ = run("history", out["chute_id"])
    assert [c["action"] for c in out["changes"]] == ["deploy", "retire"]
    toml.write_text(toml.read_text().replace(IMAGE, "sha256:nope", 1))
    code, out, err = run("deploy", str(toml))
    assert code == 1 and out is None
    assert err.strip().endswith("image_digest must be \"sha256:\" and 64 lower-case hex digits")
    assert err.count("\n") == 1
    code, _, err = run("show", "no/such-model")
    assert code == 1 and err.strip() == "chutes: HTTP 404: no such chute"
