"""Targets: every JSON request model, discovery answers, receipt metering, btauth headers."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ValidationError

from chutes_subnet.auth import BoundedNonceStore, ValidatorGate, sign_headers
from chutes_subnet.client.discovery import parse_instances, parse_models
from chutes_subnet.errors import (
    AuthenticationError,
    ChutesSubnetError,
    EnvelopeFormatError,
    ReceiptError,
)
from chutes_subnet.inference.requests import parse_request
from chutes_subnet.receipts import ReceiptSigner, ReceiptTap
from chutes_subnet.receipts import event as receipt_event
from chutes_subnet.receipts import verify as verify_receipt
from chutes_subnet.wire import messages
from chutes_subnet.wire.protocol import CHAT_PATH, COMPLETIONS_PATH

from .. import seeds
from .._bytes import Cursor, json_or_none
from ._base import Target

__all__ = ["TARGETS", "PROTOCOL_MODELS"]

#: Every pydantic model of the wire contract.
PROTOCOL_MODELS: tuple[type[BaseModel], ...] = tuple(
    obj for obj in vars(messages).values()
    if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel
    and not obj.__name__.startswith("_")
)
_PATHS = (CHAT_PATH, COMPLETIONS_PATH, "/v1/embeddings")


def _inference_request(data: bytes) -> None:
    cur = Cursor(data)
    path = _PATHS[cur.choice(len(_PATHS))]
    body = json_or_none(cur.rest())
    parse_request(path, body)


def _inference_seeds() -> list[bytes]:
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_completion_tokens": 5, "stream": True, "n": 1, "temperature": 0.1}
    return [b"\x00" + json.dumps(chat).encode(),
            b"\x01" + b'{"prompt": ["once"], "max_tokens": null, "seed": 3}']


def _protocol(data: bytes) -> None:
    cur = Cursor(data)
    model = PROTOCOL_MODELS[cur.choice(len(PROTOCOL_MODELS))]
    raw = cur.rest()
    model.model_validate_json(raw)
    obj = json_or_none(raw)
    if obj is not None:
        model.model_validate(obj)


def _protocol_seeds() -> list[bytes]:
    out = []
    for i, _model in enumerate(PROTOCOL_MODELS):
        out.append(bytes([i]) + b'{"nonce": "' + b"ab" * 32 + b'", "id": "m", "chute_id": "c", '
                   b'"instances": [{"instance_id": "i", "e2e_pubkey": "AA==", "nonces": ["n"]}], '
                   b'"data": [{"id": "m", "chute_id": "c"}], "error": "e"}')
    return out


def _discovery(data: bytes) -> None:
    cur = Cursor(data)
    body = json_or_none(cur.rest())
    parse_models(body)
    parse_instances(body)


def _discovery_seeds() -> list[bytes]:
    return [b"\x00" + json.dumps({
        "instances": [{"instance_id": "i", "e2e_pubkey": "AA==", "nonces": ["a", "b"],
                       "e2e_versions": [1, 2]}], "nonce_expires_in": 55,
        "data": [{"id": "m", "chute_id": "c"}]}).encode()]


_RECEIPT_KEY = ReceiptSigner.generate()
_BINDING = bytes(32)


def _metering(data: bytes) -> None:
    """The gateway bills from receipts a miner it does not trust sends: the
    ``X-E2E-Receipt`` header, or the receipt event found by the tap in an SSE stream."""
    cur = Cursor(data)
    if cur.choice(2) == 0:
        verify_receipt(cur.rest().decode("latin-1"), _RECEIPT_KEY.public_bytes,
                       request_binding=_BINDING, answer_sha256=bytes(32))
        return
    tap = ReceiptTap()
    for piece in cur.pieces():
        tap.feed(piece)
    tap.close()
    verify_receipt(tap.receipt, _RECEIPT_KEY.public_bytes, request_binding=_BINDING,
                   answer_sha256=tap.answer_sha256)


def _metering_seeds() -> list[bytes]:
    answer = b'data: {"e2e":"AAAA"}\n\n'
    wire = _RECEIPT_KEY.sign(request_binding=_BINDING, answer_sha256=hashlib.sha256(answer).digest(),
                             prompt_tokens=3, completion_tokens=4, instance_id="i", issued_at_ms=0)
    return [b"\x00" + wire.encode(), b"\x01\x03\x05\x30" + answer + receipt_event(wire)]


_gate: ValidatorGate | None = None


def _btauth(data: bytes) -> None:
    """Headers and body from the input: ``name: value`` lines, blank line, body."""
    global _gate
    _wallet, _sender, receiver = seeds.btauth_material()
    if _gate is None:
        _gate = ValidatorGate(receiver, lambda: None,
                              nonce_store=BoundedNonceStore(retention=120.0, max_entries=1000))
    head, _, body = data.partition(b"\n\n")
    headers = {}
    for line in head.decode("latin-1").split("\n")[:16]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    _gate.authenticate(headers, body, method="POST", path="/attest")


def _btauth_seeds() -> list[bytes]:
    wallet, _sender, receiver = seeds.btauth_material()
    body = b'{"nonce": "' + b"ab" * 32 + b'"}'
    headers = sign_headers(wallet, method="POST", path="/attest", body=body,
                           receiver_ss58=receiver)
    return ["\n".join(f"{k}: {v}" for k, v in headers.items()).encode() + b"\n\n" + body]


TARGETS = [
    Target("inference_request", "inference.requests.parse_request (chat/completions)",
           _inference_request, (ChutesSubnetError,), _inference_seeds),
    Target("protocol_models", "every pydantic model in wire/messages.py (JSON and python)",
           _protocol, (ValidationError,), _protocol_seeds),
    Target("client_discovery", "client.discovery.parse_models/parse_instances",
           _discovery, (EnvelopeFormatError,), _discovery_seeds),
    Target("usage_metering", "receipts.verify of X-E2E-Receipt + the SSE ReceiptTap (miner output)",
           _metering, (ReceiptError,), _metering_seeds),
    Target("btauth_headers", "auth.ValidatorGate.authenticate (btauth/1 headers)",
           _btauth, (AuthenticationError,), _btauth_seeds),
]
