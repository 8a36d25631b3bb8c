"""No plaintext, key or mnemonic is ever logged, at any level.

The whole stack (signing gateway -> validator-only miner with the embedded model and
simulated TEE -> OpenAI SDK over the E2EE transport) runs with every logger at DEBUG,
uvicorn's own loggers included, while the file descriptors 1 and 2 are captured too.
The flows cover success (v1 and v2, stream and non-stream), attestation and the error
paths most likely to echo input: invalid requests, tampered and replayed envelopes,
bad API keys, bad signatures. Then every secret is searched for in all of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.client.transport import E2EETransport
from tests.security_fixtures import Stack, seal_invoke, security_stack

PROMPT = "plaintext-canary zebra-kumquat-0417"
MODEL_MSG = [{"role": "user", "content": PROMPT}]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # includes formatted tracebacks


def _loggers() -> list[logging.Logger]:
    return [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]


def _widen(handler: _Collect) -> None:
    """Every logger known now at DEBUG; those that do not propagate also get ``handler``.

    Called again once the servers run: uvicorn configures its loggers when started.
    """
    for logger in _loggers():
        logger.setLevel(logging.DEBUG)
        if not logger.propagate and handler not in logger.handlers:
            logger.addHandler(handler)


@pytest.fixture
def all_logs() -> Iterator[_Collect]:
    handler = _Collect()
    root = logging.getLogger()
    saved = (root.level, {lg.name: lg.level for lg in _loggers()})
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    _widen(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for logger in _loggers():
            logger.removeHandler(handler)
            logger.setLevel(saved[1].get(logger.name, logging.NOTSET))


def find_leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets that occur in ``text`` (raw or JSON-escaped)."""
    return sorted(name for name, value in secrets.items()
                  if value and (value in text or json.dumps(value)[1:-1] in text))


def test_leak_finder_finds_a_logged_secret() -> None:
    """Control: the scan is not vacuous."""
    assert find_leaks("INFO x body=" + PROMPT, {"prompt": PROMPT}) == ["prompt"]
    assert find_leaks("INFO x status=200", {"prompt": PROMPT}) == []


def _wallet_secrets(root: Path) -> dict[str, str]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.name.endswith("pub.txt"):
            try:
                data = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                continue
            for field in ("privateKey", "secretPhrase", "secretSeed"):
                if isinstance(data, dict) and isinstance(data.get(field), str):
                    value = data[field]
                    out[f"{path.parent.name}/{path.name}.{field}"] = value
                    if value.startswith("0x"):
                        out[f"{path.parent.name}/{path.name}.{field}(no 0x)"] = value[2:]
    return out


def _exercise(stack: Stack) -> list[str]:
    """Drive every flow; return the plaintext answers the client decrypted."""
    answers = []
    for versions in ((2,), (1,)):
        client = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key=stack.api_key,
                               max_retries=0, http_client=httpx.Client(
                                   transport=E2EETransport(versions=versions,
                                                          verify="gateway")))
        out = client.chat.completions.create(model=stack.inst.model_id, messages=MODEL_MSG,
                                             max_tokens=24)
        answers.append(out.choices[0].message.content or "")
        answers.append("".join(c.choices[0].delta.content or "" for c in
                               client.chat.completions.create(
                                   model=stack.inst.model_id, messages=MODEL_MSG,
                                   max_tokens=24, stream=True) if c.choices))
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=stack.inst.model_id, max_tokens=4,
                                           messages=[{"role": PROMPT, "content": PROMPT}])
    bad = openai.OpenAI(base_url=stack.gateway_url + "/v1", api_key="csk_" + PROMPT,
                        max_retries=0, http_client=httpx.Client(transport=E2EETransport(verify="gateway")))
    with pytest.raises(openai.APIStatusError):
        bad.chat.completions.create(model=stack.inst.model_id, messages=MODEL_MSG)
    # direct to the miner: tampered, replayed, badly signed
    for version in (1, 2):
        headers, blob, _ = seal_invoke(stack.inst, {"messages": MODEL_MSG, "max_tokens": 4},
                                       version=version, nonce=f"{version:032x}")
        tampered = blob[:-1] + bytes([blob[-1] ^ 1])
        for body, who in ((tampered, "validator"), (blob, "validator"), (blob, "validator"),
                          (blob, "stranger")):
            h = {**headers, **stack.sign(who, "/e2e/invoke", body)}
            httpx.post(stack.miner_url + "/e2e/invoke", content=body, headers=h, timeout=30)
    nonce = bytes(range(32))
    body = json.dumps({"nonce": nonce.hex()}).encode()
    wire = httpx.post(stack.miner_url + "/attest", content=body, timeout=30,
                      headers={**stack.sign("validator", "/attest", body),
                               "Content-Type": "application/json"}).json()
    verdict = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True) \
        .verify(Evidence.from_wire(wire), nonce=nonce,
                e2e_pubkey=base64.b64decode(wire["e2e_pubkey"]), hotkey_ss58=wire["hotkey"],
                chute_id=wire["chute_id"],
                receipt_pubkey=base64.b64decode(wire["receipt_pubkey"]))
    assert verdict.ok, verdict.reasons
    return answers


def test_no_secret_reaches_any_log(all_logs: _Collect, capfd, tmp_path) -> None:
    with security_stack(str(tmp_path)) as stack:
        _widen(all_logs)
        answers = _exercise(stack)
        sk = stack_private_key(stack)
    out, err = capfd.readouterr()
    text = "\n".join(all_logs.lines) + out + err
    assert len(all_logs.lines) > 20  # DEBUG really was on
    assert any(line.startswith("INFO uvicorn.access") for line in all_logs.lines)
    secrets = {"prompt": PROMPT, "api_key": stack.api_key,
               "api_key_sha256": hashlib.sha256(stack.api_key.encode()).hexdigest(),
               "mlkem_private_hex": sk.hex()[:64],
               "mlkem_private_b64": base64.b64encode(sk).decode()[:44]}
    secrets.update({f"answer{i}": a for i, a in enumerate(answers) if len(a) >= 12})
    secrets.update(_wallet_secrets(tmp_path))
    assert any(k.endswith("privateKey") for k in secrets)
    assert sum(len(a) >= 12 for a in answers) >= 2, answers
    assert stack.inst.e2e_fingerprint in text  # the safe public fingerprint is logged
    assert find_leaks(text, secrets) == []



def stack_private_key(stack: Stack) -> bytes:
    """The miner's ML-KEM private key bytes (read from memory for the scan only)."""
    kind, handle = stack.miner_keypair._handle
    return handle.private_bytes_raw() if kind == "cryptography" else bytes(handle)
