"""Never plaintext, client side, and the local proxy's browser guards (DNS rebinding,
CSRF, the journal): regression tests that fail on the pre-verification client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from chutes_subnet.client import ClientPolicy, E2EETransport
from chutes_subnet.client.proxy import create_proxy_app
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.errors import PlaintextRefusedError
from chutes_subnet.miner import InstanceIdentity
from chutes_subnet.wire.protocol import INVOKE_PATHS
from tests.client_fixtures import Gateway, Recorder, gateway
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import UvicornThread, free_port

MODEL = "test/plain"
SECRET = "my diary entry for today"
MSG = [{"role": "user", "content": SECRET}]
DEV = ClientPolicy.development(gpu_count=1, dangerous_accept_simulated_tee=True)


def cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@dataclass
class Env:
    gw: Gateway
    lying: Gateway
    miner: InstanceIdentity
    proxy: str
    port: int
    lying_proxy: str


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    thread, inst = start_real_miner(MODEL)
    rec = miner_record(inst, thread.url)
    forged = dataclasses.replace(rec, e2e_pubkey=KeyPair.generate().public_b64)
    try:
        with gateway([rec]) as gw, gateway([forged], compromised=True) as lying:
            port = free_port()
            p = UvicornThread(create_proxy_app(gw.url, api_key=gw.key, policy=DEV, port=port),
                              port=port)
            q = UvicornThread(create_proxy_app(lying.url, api_key=lying.key, policy=DEV))
            with p, q:
                yield Env(gw, lying, inst, p.url, p.port, q.url)
    finally:
        thread.stop()


@pytest.mark.parametrize("call", ["embeddings", "responses"])
def test_sdk_calls_without_an_envelope_never_leave_in_plaintext(env: Env, call: str) -> None:
    """Sealed when the path is an invoke path (embeddings), else refused locally."""
    rec = Recorder()
    client = openai.OpenAI(base_url=env.gw.url + "/v1", api_key=env.gw.key, max_retries=0,
                           http_client=httpx.Client(transport=E2EETransport(inner=rec,
                                                                            policy=DEV)))
    path = f"/v1/{call}"

    def send() -> object:
        if call == "embeddings":
            return client.embeddings.create(model=MODEL, input=SECRET)
        return client.responses.create(model=MODEL, input=SECRET)

    if path in INVOKE_PATHS:
        before = env.gw.log.count("/e2e/invoke")
        out = send()
        assert out.data and out.data[0].embedding  # type: ignore[attr-defined]
        assert env.gw.log.count("/e2e/invoke") == before + 1
    else:
        with pytest.raises(Exception) as info:
            send()
        assert isinstance(cause(info.value), PlaintextRefusedError)
        assert path in str(cause(info.value))
    assert all(SECRET.encode() not in body for _m, _p, body in rec.sent)
    assert all(p != path for _m, p, _b in rec.sent)
    assert env.gw.log.count(path) == 0


def test_other_bodies_are_refused_locally(env: Env) -> None:
    rec = Recorder()
    with httpx.Client(transport=E2EETransport(env.gw.key, inner=rec, verify="gateway")) as http:
        for method, path, kw in (("POST", "/v1/files", {"content": SECRET.encode()}),
                                 ("POST", "/v1/chat/completions", {"content": SECRET.encode()}),
                                 ("PUT", "/v1/chat/completions", {"json": {"x": SECRET}})):
            with pytest.raises(PlaintextRefusedError):
                http.request(method, env.gw.url + path, **kw)
        assert http.get(env.gw.url + "/v1/models").status_code == 200
    assert [p for _m, p, _b in rec.sent] == ["/v1/models"]


def chat(url: str, **headers: str) -> httpx.Response:
    h = {"Content-Type": "application/json", **headers}
    return httpx.post(url + "/v1/chat/completions", headers=h,
                      content=b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}],'
                              b' "max_tokens": 4}' % MODEL.encode())


def test_proxy_serves_loopback_json_callers(env: Env) -> None:
    ok = chat(env.proxy, Origin=f"http://127.0.0.1:{env.port}")
    assert ok.status_code == 200 and ok.json()["choices"]
    assert chat(env.proxy, Host=f"localhost:{env.port}").status_code == 200


@pytest.mark.parametrize("headers,status,kind", [
    ({"Host": "attacker.example"}, 403, "host_not_allowed"),  # DNS rebinding
    ({"Host": "attacker.example:8787"}, 403, "host_not_allowed"),
    ({"Host": "127.0.0.1:1"}, 403, "host_not_allowed"),  # another local port
    ({"Origin": "http://attacker.example"}, 403, "origin_not_allowed"),
    ({"Origin": "http://localhost:3000"}, 403, "origin_not_allowed"),  # another local page
    ({"Origin": "null"}, 403, "origin_not_allowed"),
    ({"Sec-Fetch-Site": "cross-site"}, 403, "origin_not_allowed"),
    ({"Content-Type": "text/plain"}, 415, "json_required"),  # a "simple" CORS request
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "json_required"),
])
def test_proxy_refuses_browser_style_requests(env: Env, headers: dict, status: int,
                                              kind: str) -> None:
    before = env.gw.log.count("/e2e/")
    r = chat(env.proxy, **headers)
    assert (r.status_code, r.json()["error"]["type"]) == (status, kind)
    assert env.gw.log.count("/e2e/") == before  # nothing reached the gateway


def test_rebinding_page_posting_text_plain_is_refused(env: Env) -> None:
    """What a page on attacker.example (resolving to 127.0.0.1) sends with fetch()."""
    before = env.gw.log.count("/e2e/")
    r = chat(env.proxy, Host=f"attacker.example:{env.port}", Origin="http://attacker.example",
             **{"Content-Type": "text/plain;charset=UTF-8"})
    assert r.status_code == 403 and "choices" not in r.text
    assert env.gw.log.count("/e2e/") == before
    pre = httpx.options(env.proxy + "/v1/chat/completions",
                        headers={"Origin": "http://attacker.example",
                                 "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers


def test_proxy_never_forwards_unknown_paths(env: Env) -> None:
    for method, path in (("POST", "/v1/responses"), ("POST", "/v1/files"), ("GET", "/admin"),
                         ("DELETE", "/v1/models/x")):
        r = httpx.request(method, env.proxy + path, json={"input": SECRET})
        assert r.status_code == 404 and "never forwarded" in r.json()["error"]["message"]
        assert env.gw.log.count(path) == 0


def test_proxy_journal_needs_the_proxy_key(env: Env) -> None:
    assert httpx.get(env.proxy + "/v1/requests").status_code == 401
    assert httpx.get(env.proxy + "/v1/usage",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(env.proxy + "/v1/requests", headers={"Authorization": f"Bearer {env.gw.key}"})
    assert ok.status_code == 200 and "requests" in ok.json()


def test_proxy_catches_a_gateway_listing_an_unattested_key(env: Env) -> None:
    before = env.lying.log.count("/e2e/invoke")
    r = httpx.post(env.lying_proxy + "/v1/chat/completions",
                   json={"model": MODEL, "messages": MSG})
    err = r.json()["error"]
    assert r.status_code == 503 and err["type"] == "attestation_failed"
    assert "key_mismatch" in err["message"] and env.miner.instance_id in err["message"]
    assert env.lying.log.count("/e2e/invoke") == before == 0
