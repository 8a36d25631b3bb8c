"""A farm of simulated miner instances for ``bench/validator.py`` (a test double for hardware).

Each instance is a light miner on its own loopback port: its own ML-KEM key, receipt
key, hotkey and simulated machine (its own PCK and 8 GPUs, see
:class:`~chutes_subnet.attestation.SimulatedProvider`). It answers ``/attest`` with
fresh SIMULATED evidence for the challenge's nonce (the quote binds that nonce, the
instance's keys and its hotkey; every GPU signs the nonce) and ``/e2e/invoke`` with a
real v2 E2EE stream of the embedded model's (or a tiny Llama's) greedy answer and a
signed receipt. The validator verifies all of it as it would a real miner's.

What a real fleet does on separate hardware is set up here *before* the round, so
the round measures the validator, not the test double: every instance's keys and
simulated machine are built when the farm starts (a machine boots before it serves),
and the instances are spread over ``procs`` processes (one uvicorn server each, many
ports per server) instead of one process per instance. Per challenge and per request
the farm still does the real work: a new quote and 8 GPU signatures over the fresh
nonce, decryption of the sealed request, the model's answer, sealing and a receipt.

    with Farm(hotkeys, procs=2) as farm:
        farm.ports         # port -> hotkey
        farm.cpu_seconds() # user + system CPU of the farm processes so far
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["Farm", "process_cpu_seconds"]


def process_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of live processes, all threads (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


# --- one farm process -----------------------------------------------------------------------

def _serve(spec: dict[str, Any]) -> None:
    """Build this process's instances, print ``PORTS {...}``, serve until terminated."""
    import torch
    import uvicorn

    from chutes_subnet.asgi import invoke_headers, read_body
    from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
    from chutes_subnet.e2ee import KeyPair, v2
    from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED, run_generation
    from chutes_subnet.receipts import ReceiptSigner
    from chutes_subnet.receipts import event as receipt_event
    from chutes_subnet.sse import DONE_EVENT, format_event
    from chutes_subnet.wire.messages import AttestResponse
    from chutes_subnet.wire.protocol import INVOKE_PATH, chute_id_for_model

    started = time.perf_counter()
    torch.set_num_threads(1)
    # one "SIMULATED provider" warning per instance would be thousands of lines
    logging.getLogger("chutes_subnet.attestation.simulator").setLevel(logging.ERROR)
    model_name = spec.get("model_name") or DEFAULT_MODEL_ID
    chute = chute_id_for_model(model_name)
    generate = _real_generator(spec["model_dir"]) if spec.get("model_dir") else None
    socks, miners = [], {}
    for hotkey in spec["hotkeys"]:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        socks.append(s)
        key, signer = KeyPair.generate(), ReceiptSigner.generate()
        # one simulated machine per instance (its own PCK and GPUs): hardware shared by
        # several uids earns for none of them, and a real fleet's GPUs are distinct
        provider = SimulatedProvider(gpu_count=int(spec.get("gpu_count", 8)))
        miners[s.getsockname()[1]] = (hotkey, key, key.instance_id, signer, provider)

    async def attest(body: bytes, port: int, send: Any) -> None:
        hotkey, key, instance, signer, provider = miners[port]
        nonce = bytes.fromhex(json.loads(body)["nonce"])
        ev = provider.collect(nonce, key.public_bytes, hotkey, signer.public_bytes)
        answer = AttestResponse(instance_id=instance, chute_id=chute, model=model_name,
                                hotkey=hotkey, e2e_pubkey=key.public_b64,
                                receipt_pubkey=signer.public_b64, **ev.to_wire())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer.model_dump_json().encode()})

    async def invoke(scope: dict[str, Any], body: bytes, send: Any) -> None:
        _hotkey, key, instance, signer, _provider = miners[scope["server"][1]]
        h = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = h["x-e2e-path"]
        payload, session = v2.open_request(key, invoke_headers(h).context(), body)
        if generate is not None:
            result = await asyncio.to_thread(generate, path, payload)
        else:
            result = await asyncio.to_thread(run_generation, path, payload, seed=DEFAULT_SEED)
        sealer = session.stream_sealer()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        kind = "chat.completion.chunk" if path == "/v1/chat/completions" else "text_completion"
        answer = hashlib.sha256()  # every byte before the receipt event
        for ch in result.text:
            choice = {"index": 0, "delta": {"content": ch}} if kind != "text_completion" \
                else {"index": 0, "text": ch}
            line = "data: " + json.dumps({"object": kind, "choices": [choice]})
            frame = format_event({"e2e": sealer.seal(line.encode())})
            answer.update(frame)
            await send({"type": "http.response.body", "more_body": True, "body": frame})
        usage = {"prompt_tokens": result.prompt_tokens,
                 "completion_tokens": result.completion_tokens}
        tail = format_event({"e2e_final": sealer.finish(usage)})
        answer.update(tail)
        receipt = signer.sign(request_binding=session.request_binding,
                              answer_sha256=answer.digest(),
                              prompt_tokens=result.prompt_tokens,
                              completion_tokens=result.completion_tokens, instance_id=instance,
                              issued_at_ms=int(time.time() * 1000))
        await send({"type": "http.response.body",
                    "body": tail + receipt_event(receipt) + DONE_EVENT})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive, 1 << 20)
        if scope["path"] == "/attest":
            await attest(body, scope["server"][1], send)
        elif scope["path"] == INVOKE_PATH:
            await invoke(scope, body, send)
        else:  # e.g. another process on this machine probing a port the farm holds
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False,
                                           lifespan="off", backlog=2048))
    ports = {port: m[0] for port, m in miners.items()}
    print("PORTS " + json.dumps({"ports": ports, "build_s": time.perf_counter() - started}),
          flush=True)
    server.run(sockets=socks)


def _real_generator(model_dir: str) -> Any:
    """Greedy answers of the tiny Llama (what an engine serving it streams)."""
    import threading
    from types import SimpleNamespace

    import torch

    from chutes_subnet.validator.reference import ReferenceModel

    model = ReferenceModel(model_dir, torch_threads=1)
    lock = threading.Lock()

    def generate(path: str, payload: dict[str, Any]) -> Any:
        ids = model.prompt_ids(path, payload)
        with lock, torch.inference_mode():
            out = model._lm().generate(torch.tensor([ids]), do_sample=False, pad_token_id=1,
                                       max_new_tokens=int(payload["max_tokens"]))
        new = out[0][len(ids):]
        return SimpleNamespace(text=model.tokenizer.decode(new, skip_special_tokens=True),
                               prompt_tokens=len(ids), completion_tokens=len(new))

    return generate


# --- the parent's handle --------------------------------------------------------------------

class Farm:
    """``procs`` farm processes serving one instance per hotkey (see module doc)."""

    def __init__(self, hotkeys: list[str], *, procs: int = 2, model_dir: str | None = None,
                 model_name: str | None = None, gpu_count: int = 8) -> None:
        if procs < 1:
            raise ValueError("procs must be >= 1")
        self._slices = [hotkeys[i::procs] for i in range(procs) if hotkeys[i::procs]]
        self._spec = {"model_dir": model_dir, "model_name": model_name, "gpu_count": gpu_count}
        self._procs: list[subprocess.Popen[str]] = []
        #: port -> hotkey of every instance
        self.ports: dict[int, str] = {}
        #: wall seconds from start to every instance listening (keys and machines built)
        self.startup_s = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def cpu_seconds(self) -> float:
        """CPU the farm processes have used so far (all threads)."""
        return process_cpu_seconds(self.pids)

    def __enter__(self) -> Farm:
        started = time.perf_counter()
        try:
            for hotkeys in self._slices:  # all start at once: they build in parallel
                proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
                self._procs.append(proc)
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({**self._spec, "hotkeys": hotkeys}) + "\n")
                proc.stdin.close()
            served = []
            for proc in self._procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line.startswith("PORTS "):
                    raise RuntimeError("a miner farm process did not start")
                served.append(list(json.loads(line[6:])["ports"].items()))
            # interleaved: a validator evaluates uids in order, so consecutive uids on
            # different processes keep every farm process busy (in blocks, one at a time
            # was the bottleneck: its event loop)
            for group in itertools.zip_longest(*served):
                self.ports.update({int(p): hk for p, hk in filter(None, group)})
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - started
        return self

    def close(self) -> None:
        """Stop every farm process."""
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    import resource

    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
    _serve(json.loads(sys.stdin.readline()))
