"""Fixed material the fuzz targets share: keys, sessions and valid example inputs.

Everything is built once per process (``functools.cache``) from the project's own
code — the simulated attestation provider, the e2ee recipes, a throw-away wallet — so
targets start from *valid* inputs and mutations reach deep into each decoder. The
stored hardware vectors (found by :mod:`tests.vector_files`) are added too.
"""

from __future__ import annotations

import base64
import json
import tempfile
from functools import cache
from typing import Any

from chutes_subnet.e2ee import KeyPair, RequestContext, v1, v2
from tests.vector_files import vectors_dir

__all__ = [
    "CHUTE_ID",
    "INSTANCE_ID",
    "NONCE",
    "PATH",
    "CHAT_BODY",
    "ATTEST_NONCE",
    "HOTKEY",
    "instance_key",
    "context",
    "v1_exchange",
    "v2_exchange",
    "simulated_evidence",
    "workload_manifest",
    "event_logs",
    "rim_files",
    "vector_files",
    "btauth_material",
]

CHUTE_ID = "6f1c3c1e-0000-4000-8000-000000000001"
INSTANCE_ID = "inst-fuzz"
NONCE = "0123456789abcdef0123456789abcdef"
PATH = "/v1/chat/completions"
CHAT_BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                             "max_tokens": 4, "stream": False}
ATTEST_NONCE = bytes(range(32))
HOTKEY = "5FuzzHotkeyNotARealAddress"


@cache
def instance_key() -> KeyPair:
    """The instance ML-KEM key every e2ee target decrypts with."""
    return KeyPair.generate()


def context(stream: bool = False) -> RequestContext:
    """The routing context v2 envelopes are bound to."""
    return RequestContext(CHUTE_ID, INSTANCE_ID, NONCE, PATH, stream)


@cache
def v1_exchange() -> tuple[bytes, v1.ResponseKey, bytes]:
    """(request blob, the client's response key, a response blob for it)."""
    blob, rkey = v1.seal_request(instance_key().public_bytes, CHAT_BODY)
    _, response_pk = v1.open_request(instance_key(), blob)
    return blob, rkey, v1.seal_response(response_pk, {"choices": [], "usage": {}})


@cache
def v2_exchange() -> tuple[bytes, v2.ClientSession, v2.ServerSession, bytes]:
    """(request blob, client session, server session, a response blob)."""
    blob, client = v2.seal_request(instance_key().public_bytes, context(), CHAT_BODY)
    _, server = v2.open_request(instance_key(), context(), blob)
    return blob, client, server, server.seal_response({"choices": [], "usage": {}})


@cache
def simulated_evidence() -> dict[str, Any]:
    """Wire-form evidence from the (insecure) simulated provider, one GPU."""
    from chutes_subnet.attestation.simulator.device import SimulatedDevice
    from chutes_subnet.attestation.verify.binding import build_report_data
    from chutes_subnet.attestation.verify.eventlog import replay, workload_event
    from chutes_subnet.attestation.verify.evidence import Evidence

    device = SimulatedDevice(b"\x07" * 32, gpu_count=1)
    report_data = build_report_data(ATTEST_NONCE, instance_key().public_bytes, HOTKEY)
    event = workload_event(workload_manifest())
    ev = Evidence(device.quote(report_data, rtmr3=replay([event])),
                  device.gpu_evidence(ATTEST_NONCE), simulated=True,
                  event_log=[event.to_wire()], workload_manifest=workload_manifest().to_dict())
    return ev.to_wire()


def workload_manifest() -> Any:
    """A well-formed workload manifest (the seed of the manifest and event-log targets)."""
    from chutes_subnet.attestation.verify.manifest import WorkloadManifest

    digest = "sha256:" + "5a" * 32
    return WorkloadManifest(chute_id="fuzz-chute", model_id="org/model", model_revision="r1",
                            weights_digest=digest, tokenizer_digest=digest, engine="vllm",
                            engine_version="0.8.5", image_digest=digest, dtype="bfloat16",
                            quantization="none", max_context=32768)


def event_logs() -> list[bytes]:
    """RTMR3 event logs: the simulated TD's and the real dstack vector's (if present)."""
    from chutes_subnet.attestation.verify.eventlog import RuntimeEvent, workload_event

    logs = [json.dumps([RuntimeEvent.runtime("boot", b"\x01").to_wire(),
                        workload_event(workload_manifest()).to_wire()]).encode()]
    try:
        info = json.loads((vectors_dir() / "tdx-eventlog" / "tcb_info.json").read_text())
        logs.append(json.dumps(info["event_log"]).encode())
    except (OSError, ValueError, KeyError):
        pass
    return logs


def rim_files() -> list[bytes]:
    """Public NVIDIA RIMs (if present)."""
    try:
        return [p.read_bytes() for p in sorted((vectors_dir() / "gpu" / "rim").glob("*.swidtag"))]
    except OSError:
        return []




def vector_files(kind: str) -> list[bytes]:
    """Stored hardware vectors of one kind (``"quote"`` or ``"gpu"``); [] if absent."""
    root = vectors_dir()
    out: list[bytes] = []
    try:
        if kind == "quote":
            out = [p.read_bytes() for p in sorted((root / "tdx").glob("*.bin"))]
        elif kind == "gpu":
            for p in sorted((root / "gpu").glob("*.json")):
                out += [json.dumps(e).encode() for e in json.loads(p.read_text())[:2]]
    except (OSError, ValueError):
        return []
    return out


def spdm_blobs() -> list[bytes]:
    """Raw SPDM evidence bytes: simulated, plus stored H100 ones."""
    entries = [simulated_evidence()["gpu_evidence"][0]]
    entries += [json.loads(e) for e in vector_files("gpu")]
    return [base64.b64decode(e["evidence"]) for e in entries]


@cache
def btauth_material() -> tuple[Any, str, str]:
    """(a throw-away validator wallet, its hotkey ss58, the receiver miner's ss58)."""
    from chutes_subnet.wallets import ensure_dev_wallet, hotkey_ss58

    root = tempfile.mkdtemp(prefix="chutes-fuzz-wallets-")
    validator = ensure_dev_wallet("fuzz-validator", "hot", root)
    miner = ensure_dev_wallet("fuzz-miner", "hot", root)
    return validator, hotkey_ss58(validator), hotkey_ss58(miner)
