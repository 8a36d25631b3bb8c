"""Test support: the real miner app (embedded model, simulated TEE) for end-to-end
gateway/client tests, the registry record a validator would write for it, and sealed
invokes of it as a client sends them (tests/miner/)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.auth import ValidatorGate, sign_headers
from chutes_subnet.e2ee import PADDING_NONE, PADDING_PADME, RequestContext, v1, v2
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import InstanceIdentity, MinerConfig, create_app
from chutes_subnet.registry import InstanceRecord
from chutes_subnet.sse import SSEParser
from chutes_subnet.wallets import hotkey_ss58
from chutes_subnet.wire.call import StreamDecoder
from tests.servers import UvicornThread

__all__ = ["start_real_miner", "miner_record", "DEV_MINER_HOTKEY", "CHAT", "SECRET_PROMPT",
           "MAX_BODY", "Env", "payload", "sealed", "open_json", "stream_text", "start_miner"]

#: A syntactically valid hotkey for miners whose callers are not checked.
DEV_MINER_HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def start_real_miner(model: str, *, hotkey: str = DEV_MINER_HOTKEY,
                     gate: ValidatorGate | None = None, **config: Any
                     ) -> tuple[UvicornThread, InstanceIdentity]:
    """The real miner app serving ``model`` on loopback (``gate=None``: open invoke)."""
    cfg = MinerConfig(tee="simulated", model_id=model,
                      invoke_auth="validator" if gate is not None else "none", **config)
    app = create_app(cfg, hotkey_ss58=hotkey, backend=make_backend("embedded", model_id=model),
                     provider=SimulatedProvider(gpu_count=1), gate=gate)
    return UvicornThread(app).start(), app.state.instance


def miner_record(inst: InstanceIdentity, url: str, *, score: float = 1.0, ttl: float = 600.0,
                 uid: int = 1) -> InstanceRecord:
    """What a validator registers after verifying this instance's attestation."""
    now = time.time()
    return InstanceRecord(instance_id=inst.instance_id, chute_id=inst.chute_id,
                          model=inst.model_id, url=url, hotkey=inst.hotkey, uid=uid,
                          e2e_pubkey=inst.e2e_pubkey, e2e_versions=inst.e2e_versions,
                          receipt_pubkey=inst.receipt_pubkey,
                          verified_at=now, expires_at=now + ttl, score=score, simulated=True)


CHAT = "/v1/chat/completions"
SECRET_PROMPT = "zebra-kumquat-7731 tell me the launch codes"
MAX_BODY = 256 * 1024


@dataclass
class Env:
    url: str
    inst: InstanceIdentity
    wallets: dict[str, Any]
    miner_hotkey: str

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None,
             signer: str | None = "validator", **kw: Any) -> httpx.Response:
        h = dict(headers or {})
        if signer is not None:
            h.update(sign_headers(self.wallets[signer], method="POST", path=path, body=body,
                                  receiver_ss58=self.miner_hotkey))
        return httpx.post(self.url + path, content=body, headers=h, timeout=30, **kw)


def payload(max_tokens: int = 12, content: str = SECRET_PROMPT) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens}


_counter = iter(range(10**9))


def sealed(inst: InstanceIdentity, *, version: int = 2, stream: bool = False,
           body: dict[str, Any] | None = None, nonce: str | None = None,
           bound_instance: str | None = None,
           padding: int = PADDING_PADME) -> tuple[dict[str, str], bytes, Any]:
    """Headers, envelope and client session for one invoke of ``inst`` (v2 padded, as
    clients send it by default)."""
    nonce = nonce or f"{next(_counter):032x}"
    pk = base64.b64decode(inst.e2e_pubkey)
    headers = {"X-Chute-Id": inst.chute_id, "X-Instance-Id": inst.instance_id,
               "X-E2E-Nonce": nonce, "X-E2E-Stream": "true" if stream else "false",
               "X-E2E-Path": CHAT, "Content-Type": "application/octet-stream"}
    body = body or payload()
    if version == 2:
        ctx = RequestContext(inst.chute_id, bound_instance or inst.instance_id, nonce, CHAT,
                             stream, padding)
        blob, session = v2.seal_request(pk, ctx, body)
        headers["X-E2E-Version"] = "2"
        if padding != PADDING_NONE:
            headers["X-E2E-Padding"] = str(padding)
    else:
        blob, session = v1.seal_request(pk, body)
    return headers, blob, session


def open_json(version: int, session: Any, blob: bytes) -> dict[str, Any]:
    return session.open_response(blob) if version == 2 else v1.open_response(session, blob)


def stream_text(version: int, session: Any, raw: bytes) -> str:
    dec = StreamDecoder(version, session)
    plain = dec.feed(raw) + dec.finish()
    text = ""
    for data in SSEParser().feed(plain):
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


def start_miner(config: MinerConfig, wallets: dict[str, Any], gate: ValidatorGate | None,
                **provider_opts: Any) -> tuple[UvicornThread, InstanceIdentity]:
    """The real miner app for ``config``, as the dev wallet "miner", on loopback."""
    app = create_app(config, hotkey_ss58=hotkey_ss58(wallets["miner"]),
                     backend=make_backend("embedded"),
                     provider=SimulatedProvider(gpu_count=1, **provider_opts), gate=gate)
    return UvicornThread(app).start(), app.state.instance
