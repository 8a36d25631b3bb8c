"""httpx transports that end-to-end encrypt OpenAI model calls through a gateway.

Usage with the OpenAI SDK (sync; :class:`AsyncE2EETransport` for ``AsyncOpenAI``)::

    http = httpx.Client(transport=E2EETransport(api_key="csk_..."))
    client = OpenAI(base_url="https://gateway.example/v1", api_key="csk_...", http_client=http)
    client.chat.completions.create(model="...", messages=[...], stream=True)

A ``POST`` to one of :data:`~chutes_subnet.wire.protocol.INVOKE_PATHS` with a JSON body
naming a ``model`` is resolved to a chute (``/v1/models``, cached), given an instance
and a nonce (``/e2e/instances/{chute_id}``, pooled until expiry or exhaustion), the
instance is **verified by this client** (``verify="full"``, the default: a challenge
with the client's own nonce relayed by the gateway, checked with the validator's
verifier and the client's :class:`~chutes_subnet.client.client_policy.ClientPolicy`, then
pinned; see :mod:`chutes_subnet.client.instance_verifier`), the body is sealed (E2EE v2 only
unless ``versions`` opts into v1), sent to ``/e2e/invoke``, and the answer is
decrypted — JSON as JSON, SSE as SSE — so the SDK sees an ordinary response.

Never plaintext: any other request with a body (``/v1/embeddings`` before the
gateway serves it encrypted, ``/v1/responses``, files, a model call whose body is not
a JSON object with a model) raises :class:`~chutes_subnet.errors.PlaintextRefusedError`
before a byte leaves the machine. Body-less reads (``GET /v1/models``) pass through.

``verify="quorum"`` accepts a key when a stake-weighted quorum of validator-signed
statements vouches for it (:mod:`chutes_subnet.client.quorum`): it needs the client's
own ``metagraph`` source (stakes and permits never come from the gateway) and takes a
``quorum`` :class:`~chutes_subnet.attestation.verify.signed_statements.QuorumRule` (default: 3
validators, half of validator stake). ``verify="gateway"`` trusts whatever key the
gateway lists (the pre-verification behaviour; opt-in, logged as a warning).

Retries (each with a fresh nonce and a freshly sealed envelope): a refused nonce
(403/409/410) drops the pool and rediscovers; a gateway answer carrying
``X-E2E-Retry: instance`` (miner failed before any byte, or instance gone) moves to
another instance; an instance that fails verification is skipped (and listed in
``transport.rejected``). Errors: :class:`~chutes_subnet.errors.NoInstancesError`
(:class:`~chutes_subnet.errors.NoVerifiedInstanceError` when every instance failed
verification, with ``failures``), :class:`~chutes_subnet.errors.DowngradeError`,
:class:`~chutes_subnet.errors.AttestationRateLimited`,
:class:`~chutes_subnet.errors.NoncesExhaustedError`, and while iterating a stream
:class:`~chutes_subnet.errors.StreamIntegrityError` /
:class:`~chutes_subnet.errors.DecryptionError`. Other gateway answers (401, 429, ...)
are returned as they are, so the SDK raises its usual typed errors.

Receipts: when discovery names the instance's attested receipt key, every answer's
signed receipt is verified (:mod:`chutes_subnet.receipts`); one that is missing or does
not match the exact answer bytes is a :class:`~chutes_subnet.errors.ReceiptError`. The
verified receipt is ``response.extensions["e2e_receipt"]`` (for a stream, once it was
read to the end), and a non-stream answer carries ``X-E2E-Receipt`` and an
``X-E2E-Usage`` built from it, so an application can audit what it was billed.

The two transports share one sans-I/O flow (a generator that yields the HTTP requests
it needs); only the driving loop differs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from chutes_subnet.attestation.verify.signed_statements import QuorumRule
from chutes_subnet.client._flow import Flow, Step, drive_async, drive_sync
from chutes_subnet.client.client_policy import ClientPolicy
from chutes_subnet.client.discovery import DiscoveryCache, parse_instances, parse_models
from chutes_subnet.client.instance_verifier import InstanceVerifier
from chutes_subnet.client.quorum import MetagraphSource, QuorumVerifier
from chutes_subnet.errors import (
    DowngradeError,
    InstanceVerificationError,
    NoInstancesError,
    NoncesExhaustedError,
    NoVerifiedInstanceError,
    PlaintextRefusedError,
)
from chutes_subnet.wire.call import SealedCall, StreamDecoder, choose_version, seal_call
from chutes_subnet.wire.headers import (
    H_AUTHORIZATION,
    H_RECEIPT,
    H_RETRY,
    H_USAGE,
    RETRY_INSTANCE,
    Usage,
)
from chutes_subnet.wire.protocol import INVOKE_PATH, INVOKE_PATHS, REFUSED_PATHS

__all__ = ["VERIFY_MODES", "AsyncE2EETransport", "E2EETransport", "plaintext_refusal"]

log = logging.getLogger("chutes_subnet.client")

_DISCOVERY_TIMEOUT = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 10.0}
_NONCE_STATUSES = (403, 409, 410)
#: ``full``: the client verifies every instance itself (default); ``quorum``: a
#: stake-weighted quorum of validator-signed statements; ``gateway``: trust the
#: gateway's list (opt-in)
VERIFY_MODES = ("full", "quorum", "gateway")
#: instances one request may try to verify before giving up (the gateway offers <= 5)
_MAX_VERIFICATIONS = 16
_BODYLESS_METHODS = ("GET", "HEAD", "OPTIONS", "DELETE")


@dataclass
class _StreamResult:
    upstream: httpx.Response
    decoder: StreamDecoder


#: ``response.extensions`` key of the answer's verified receipt
#: (:class:`chutes_subnet.receipts.Receipt`; None when the instance's key is unknown)
RECEIPT_EXTENSION = "e2e_receipt"


def _model_call(request: httpx.Request) -> tuple[dict[str, Any], str] | None:
    """``(payload, invoke path)`` when the request is an encryptable model call."""
    if request.method != "POST":
        return None
    path = request.url.path
    invoke_path = next((p for p in INVOKE_PATHS if path.endswith(p)), None)
    if invoke_path is None:
        return None
    try:
        payload = json.loads(request.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
        return None
    return payload, invoke_path


def plaintext_refusal(method: str, path: str, body: bytes) -> str | None:
    """Why a request that is not a sealable model call must not be sent (None: it may)."""
    if method.upper() in _BODYLESS_METHODS and not body:
        return None
    if any(path.endswith(p) for p in INVOKE_PATHS):
        return f"{method} {path}: body must be a JSON object naming a model to be encrypted"
    refused = next((why for p, why in REFUSED_PATHS.items() if path.endswith(p)), None)
    if refused is not None:
        return f"{method} {path} is not served end to end: {refused}"
    return (f"{method} {path} cannot be end-to-end encrypted, so it is not sent "
            f"(encrypted paths: {', '.join(INVOKE_PATHS)})")


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


class _Core:
    """Configuration, caches and the shared request flow."""

    def __init__(self, api_key: str | None, api_base: str | None,
                 versions: tuple[int, ...], max_attempts: int, verify: str,
                 policy: ClientPolicy | None, metagraph: MetagraphSource | None = None,
                 quorum: QuorumRule | None = None) -> None:
        if not versions or any(v not in (1, 2) for v in versions):
            raise ValueError("versions must be a non-empty subset of (1, 2), in preference order")
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}")
        if verify == "gateway":
            if policy is not None:
                raise ValueError("a policy needs verify='full'")
            log.warning("E2EE client with verify='gateway': encrypting to whatever key the "
                        "gateway lists, WITHOUT checking attestation")
        if 1 in versions:
            log.info("E2EE v1 allowed by explicit opt-in (no stream integrity, no AAD)")
        self.api_key = api_key
        self.api_base = api_base.rstrip("/") if api_base else None
        self.versions = versions
        self.max_attempts = max(1, max_attempts)
        self.cache = DiscoveryCache()
        self.verifier: InstanceVerifier | QuorumVerifier | None = None
        if verify == "quorum":
            if metagraph is None:
                raise ValueError("verify='quorum' needs metagraph=: the client's own source of "
                                 "validator stakes (e.g. a MetagraphCache over its chain)")
            p = policy or ClientPolicy.default()
            self.verifier = QuorumVerifier(
                metagraph, quorum or QuorumRule(), pin_ttl=p.pin_ttl, failure_ttl=p.failure_ttl,
                dangerous_accept_simulated_tee=p.dangerous_accept_simulated_tee)
        elif verify == "full":
            if metagraph is not None or quorum is not None:
                raise ValueError("metagraph= and quorum= need verify='quorum'")
            self.verifier = InstanceVerifier(policy or ClientPolicy.default(),
                                             require_v2=1 not in versions)

    def _base(self, request: httpx.Request, invoke_path: str) -> str:
        if self.api_base:
            return self.api_base
        url = request.url
        prefix = url.path[: len(url.path) - len(invoke_path)]
        return f"{url.scheme}://{url.netloc.decode('ascii')}{prefix}"

    def _key(self, request: httpx.Request) -> str:
        if self.api_key:
            return self.api_key
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NoInstancesError("no api key: pass api_key= or send Authorization: Bearer")
        return token.strip()

    def _chute(self, model: str, base: str, auth: dict[str, str]) -> Flow[str | httpx.Response]:
        chute = self.cache.chute_for(model)
        if chute is not None:
            return chute
        resp = yield Step(httpx.Request("GET", f"{base}/v1/models", headers=auth,
                                        extensions={"timeout": _DISCOVERY_TIMEOUT}), True)
        if resp.status_code != 200:
            return resp
        self.cache.set_models(parse_models(resp.json()))
        chute = self.cache.lookup_after_refresh(model)
        if chute is None:
            raise NoInstancesError("the gateway serves no model of that name")
        return chute

    def _refill(self, chute: str, base: str, auth: dict[str, str]) -> Flow[httpx.Response | None]:
        resp = yield Step(httpx.Request("GET", f"{base}/e2e/instances/{chute}", headers=auth,
                                        extensions={"timeout": _DISCOVERY_TIMEOUT}), True)
        if resp.status_code == 503 and _reason(resp) == "no_instances":
            raise NoInstancesError("no attested instance serves this model now")
        if resp.status_code == 404 and _reason(resp) == "unknown_chute":
            raise NoInstancesError("the gateway knows no instance of this model")
        if resp.status_code != 200:
            return resp
        offers, ttl = parse_instances(resp.json())
        self.cache.refill(chute, offers, ttl)
        return None

    def flow(self, request: httpx.Request, payload: dict[str, Any],
             invoke_path: str) -> Flow[httpx.Response | _StreamResult]:
        """The whole model call; yields requests, receives responses."""
        base, key = self._base(request, invoke_path), self._key(request)
        auth = {H_AUTHORIZATION: f"Bearer {key}"}
        stream = bool(payload.get("stream", False))
        chute = yield from self._chute(payload["model"], base, auth)
        if isinstance(chute, httpx.Response):
            return chute
        avoid: set[str] = set()
        last: httpx.Response | None = None
        failures: list[InstanceVerificationError] = []
        downgraded: list[str] = []
        nonce_refusals = attempts = 0
        while attempts < self.max_attempts and len(failures) + len(downgraded) < _MAX_VERIFICATIONS:
            got = self.cache.take(chute, avoid)
            if got is None:
                refused = yield from self._refill(chute, base, auth)
                if refused is not None:
                    return refused
                got = self.cache.take(chute, avoid)
                if got is None:
                    break
            offer, nonce = got
            version = choose_version(offer, self.versions)
            if version is None:
                avoid.add(offer.instance_id)
                downgraded.append(f"{offer.instance_id[:40]} offers {list(offer.e2e_versions)}")
                continue
            if self.verifier is not None:
                verdict = yield from self.verifier.flow(base, auth, offer, chute)
                if not verdict.ok:
                    failures.append(verdict.error())
                    avoid.add(offer.instance_id)
                    self.cache.drop_instance(chute, offer.instance_id)
                    continue
                # receipts verify under the key the client itself saw attested
                offer = dataclasses.replace(offer, receipt_pubkey=verdict.receipt_pubkey)
            attempts += 1
            call = seal_call(offer, chute_id=chute, nonce=nonce, path=invoke_path,
                             stream=stream, payload=payload, api_key=key, version=version)
            invoke = httpx.Request("POST", base + INVOKE_PATH, headers=call.headers,
                                   content=call.body,
                                   extensions={"timeout": request.extensions.get("timeout")}
                                   if "timeout" in request.extensions else {})
            resp = yield Step(invoke, not stream)
            if resp.status_code == 200:
                return self._success(call, resp, stream)
            last = resp
            if resp.status_code in _NONCE_STATUSES and _reason(resp).startswith("nonce_"):
                nonce_refusals += 1
                self.cache.invalidate(chute)
                continue
            if resp.headers.get(H_RETRY) == RETRY_INSTANCE:
                avoid.add(offer.instance_id)
                self.cache.drop_instance(chute, offer.instance_id)
                continue
            return resp
        if nonce_refusals and last is not None and last.status_code in _NONCE_STATUSES:
            raise NoncesExhaustedError("the gateway rejected every nonce it offered")
        if last is not None:
            return last  # every instance tried failed: report the last failure
        if failures:
            raise NoVerifiedInstanceError(tuple(failures))
        if downgraded:
            raise DowngradeError(
                f"no instance offers an allowed E2EE version {list(self.versions)} "
                f"({'; '.join(downgraded[:3])}); v1 needs an explicit opt-in: versions=(2, 1)")
        raise NoInstancesError("no usable instance for this model")

    @staticmethod
    def _success(call: SealedCall, resp: httpx.Response,
                 stream: bool) -> httpx.Response | _StreamResult:
        if stream:
            return _StreamResult(resp, call.stream_decoder())
        # a receipt that does not verify for these exact bytes is a ReceiptError
        receipt = call.verify_receipt(resp.headers.get(H_RECEIPT), resp.content)
        data = call.open_json(resp.content)
        headers = {"content-type": "application/json"}
        if receipt is not None:
            headers[H_RECEIPT] = receipt.wire
            headers[H_USAGE] = Usage(receipt.prompt_tokens, receipt.completion_tokens).to_header()
        return httpx.Response(200, headers=headers, content=json.dumps(data).encode(),
                              extensions={RECEIPT_EXTENSION: receipt})


def _finish(result: httpx.Response | _StreamResult, stream_cls: Any,
            original: httpx.Request) -> httpx.Response:
    if isinstance(result, _StreamResult):
        # the verified receipt lands in extensions once the stream was read to its end
        extensions: dict[str, Any] = {RECEIPT_EXTENSION: None}
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=stream_cls(result.upstream, result.decoder, extensions),
                              request=original, extensions=extensions)
    # A ByteStream (not content=) keeps the response streamable for callers that use
    # stream=True / aiter_raw() on non-stream answers too.
    return httpx.Response(result.status_code, headers=result.headers,
                          stream=httpx.ByteStream(result.content), request=original,
                          extensions=dict(result.extensions))


def _refuse_plaintext(request: httpx.Request) -> None:
    why = plaintext_refusal(request.method, request.url.path, request.content)
    if why is not None:
        raise PlaintextRefusedError(why)


class _SyncDecrypted(httpx.SyncByteStream):
    def __init__(self, upstream: httpx.Response, decoder: StreamDecoder,
                 extensions: dict[str, Any]) -> None:
        self._up, self._dec, self._ext = upstream, decoder, extensions

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._up.stream:  # type: ignore[union-attr]
            out = self._dec.feed(chunk)
            if out:
                yield out
        tail = self._dec.finish()
        self._ext[RECEIPT_EXTENSION] = self._dec.receipt
        if tail:
            yield tail

    def close(self) -> None:
        self._up.close()


class _AsyncDecrypted(httpx.AsyncByteStream):
    def __init__(self, upstream: httpx.Response, decoder: StreamDecoder,
                 extensions: dict[str, Any]) -> None:
        self._up, self._dec, self._ext = upstream, decoder, extensions

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._up.stream:  # type: ignore[union-attr]
            out = self._dec.feed(chunk)
            if out:
                yield out
        tail = self._dec.finish()
        self._ext[RECEIPT_EXTENSION] = self._dec.receipt
        if tail:
            yield tail

    async def aclose(self) -> None:
        await self._up.aclose()


class E2EETransport(httpx.BaseTransport):
    """Sync transport: verifies, encrypts model calls end to end, refuses plaintext.

    ``api_key`` defaults to the request's own ``Authorization: Bearer`` value;
    ``api_base`` (the gateway URL) defaults to the request URL minus the model path.
    ``versions`` lists allowed E2EE versions in preference order (default v2 only;
    ``(2, 1)`` opts into v1). ``verify`` is ``"full"`` (default), ``"quorum"`` (with
    ``metagraph``, the client's own snapshot source, and an optional ``quorum`` rule)
    or ``"gateway"``; ``policy`` is the :class:`ClientPolicy` (default: the packaged
    one; in quorum mode only its pin times and simulated-TEE switch apply).
    ``rejected`` lists the latest instances refused by verification, with reasons.
    """

    def __init__(self, api_key: str | None = None, api_base: str | None = None, *,
                 inner: httpx.BaseTransport | None = None, versions: tuple[int, ...] = (2,),
                 max_attempts: int = 4, verify: str = "full",
                 policy: ClientPolicy | None = None, metagraph: MetagraphSource | None = None,
                 quorum: QuorumRule | None = None) -> None:
        self._core = _Core(api_key, api_base, versions, max_attempts, verify, policy,
                           metagraph, quorum)
        self._inner = inner or httpx.HTTPTransport()

    @property
    def rejected(self) -> list[InstanceVerificationError]:
        v = self._core.verifier
        return list(v.rejected) if v is not None else []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        call = _model_call(request)
        if call is None:
            _refuse_plaintext(request)
            return self._inner.handle_request(request)
        result = drive_sync(self._core.flow(request, *call), self._inner)
        return _finish(result, _SyncDecrypted, request)

    def close(self) -> None:
        self._inner.close()


class AsyncE2EETransport(httpx.AsyncBaseTransport):
    """Async twin of :class:`E2EETransport` (for ``httpx.AsyncClient`` / ``AsyncOpenAI``)."""

    def __init__(self, api_key: str | None = None, api_base: str | None = None, *,
                 inner: httpx.AsyncBaseTransport | None = None,
                 versions: tuple[int, ...] = (2,), max_attempts: int = 4,
                 verify: str = "full", policy: ClientPolicy | None = None,
                 metagraph: MetagraphSource | None = None,
                 quorum: QuorumRule | None = None) -> None:
        self._core = _Core(api_key, api_base, versions, max_attempts, verify, policy,
                           metagraph, quorum)
        self._inner = inner or httpx.AsyncHTTPTransport()

    @property
    def rejected(self) -> list[InstanceVerificationError]:
        v = self._core.verifier
        return list(v.rejected) if v is not None else []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        call = _model_call(request)
        if call is None:
            _refuse_plaintext(request)
            return await self._inner.handle_async_request(request)
        result = await drive_async(self._core.flow(request, *call), self._inner)
        return _finish(result, _AsyncDecrypted, request)

    async def aclose(self) -> None:
        await self._inner.aclose()
