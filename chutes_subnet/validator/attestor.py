"""Attestation challenges and the cache of verified instance keys.

``Attestor.challenge`` runs one challenge, in order:

1. issue a fresh 32-byte nonce from the validator's :class:`ChallengeBook`;
2. POST ``/attest`` with an ``AttestRequest``, btauth/1-signed for the miner's hotkey
   (bounded body, per-request timeout);
3. parse the ``AttestResponse``: chute id must derive from the model, the E2EE key
   must be an ML-KEM-768 public key and the instance id must derive from it,
   evidence must be well-formed;
4. full verification by the :class:`Verifier` (DCAP, policy, GPU evidence, nonce
   single use, binding to nonce + E2EE key + the hotkey *registered at this uid*).

``Attestor.ensure`` serves a verified key from the cache until its TTL, but
re-challenges with probability ``rechallenge_probability`` every round, so a miner
cannot predict when its hardware is looked at again. The cache holds one entry per
``(uid, instance URL)``: a uid fronting several instances (:mod:`.fleet_fetch`) has each
challenged, cached and forgotten on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from chutes_subnet.attestation.verify.challenges import ChallengeBook
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.manifest import WorkloadManifest
from chutes_subnet.attestation.verify.reasons import Verdict
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.auth import sign_headers
from chutes_subnet.chain import Neuron
from chutes_subnet.e2ee import decode_public_key
from chutes_subnet.errors import AttestationError, E2EEError
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.receipts import decode_public_key as decode_receipt_key
from chutes_subnet.wire.messages import AttestRequest, AttestResponse
from chutes_subnet.wire.protocol import (
    E2EE_VERSION_V2,
    MAX_ATTEST_RESPONSE_BYTES,
    SUPPORTED_E2EE_VERSIONS,
    chute_id_for_model,
    parse_json,
)

from .failures import EvaluationFailure, from_http_error, read_bounded
from .results import AttestationSummary
from .workers import WorkerPool

__all__ = ["MAX_ATTEST_RESPONSE_BYTES", "AttestedInstance", "Attestor", "miner_url"]


def miner_url(axon: str) -> str:
    """``http://ip:port`` for an axon string as the chain reports it."""
    return f"http://{axon}"


@dataclass(frozen=True)
class AttestedInstance:
    """A miner instance whose key passed verification, valid until ``expires_at``."""

    uid: int
    hotkey: str
    axon: str
    instance_id: str
    chute_id: str
    model: str
    e2e_pubkey: bytes
    summary: AttestationSummary
    #: E2EE versions the instance declared (the benchmark needs 2; clients pick from these)
    e2e_versions: tuple[int, ...] = (1, 2)
    #: Ed25519 key that signs the instance's answer receipts (bound: report_data layout v2)
    receipt_pubkey: bytes = b""
    #: the workload manifest the instance measured into RTMR3 (verified), if any
    manifest: WorkloadManifest | None = None
    #: SHA-256 (hex) of the verified TDX quote (what validator statements name)
    quote_sha256: str = ""
    #: the instance's base URL from the uid's fleet list ("": the published axon itself)
    base_url: str = ""

    @property
    def url(self) -> str:
        return self.base_url or miner_url(self.axon)

    @property
    def expires_at(self) -> float:
        return self.summary.expires_at


def _summary(verdict: Verdict | None, resp: AttestResponse | None, now: float,
             ttl: float) -> AttestationSummary:
    ok = bool(verdict and verdict.ok)
    return AttestationSummary(
        ok=ok,
        instance_id=resp.instance_id if resp else None,
        chute_id=resp.chute_id if resp else None,
        model=resp.model if resp else None,
        e2e_pubkey=resp.e2e_pubkey if resp else None,
        simulated=bool(verdict.simulated) if verdict else False,
        tcb_status=verdict.tcb_status if verdict else None,
        profile=verdict.profile if verdict else None,
        gpu_model=verdict.gpu_model if verdict else None,
        gpu_count=verdict.gpu_count if verdict else 0,
        reason_codes=verdict.reason_codes if verdict else (),
        verified_at=now,
        expires_at=now + ttl if ok else now,
        platform_id=verdict.platform_id if verdict else None,
        gpu_ids=verdict.gpu_ids if verdict else (),
        manifest_sha384=verdict.manifest_sha384 if verdict else None,
    )


class Attestor:
    """Challenges miners and caches verified instance keys (see module doc)."""

    def __init__(
        self,
        verifier: Verifier,
        wallet: Any,
        http: httpx.AsyncClient,
        *,
        ttl: float,
        rechallenge_probability: float,
        challenges: ChallengeBook | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        self.verifier = verifier
        # The verifier consumes nonces from its own book when it has one; otherwise
        # this attestor keeps the book and consumes the nonce before verifying.
        self._own_book = verifier.challenges is None
        self.challenges = verifier.challenges or challenges or ChallengeBook(ttl=120.0)
        # verification in worker processes, unless the verifier's nonce book must see it
        self._pool = pool if pool is not None and pool.verifies and self._own_book else None
        self.wallet = wallet
        self.http = http
        self.ttl = float(ttl)
        self.rechallenge_probability = float(rechallenge_probability)
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        #: uid -> instance URL -> verified instance
        self._cache: dict[int, dict[str, AttestedInstance]] = {}

    def cached(self, uid: int, url: str | None = None) -> AttestedInstance | None:
        """The cached verified instance of ``uid`` at ``url`` (None: its first), possibly
        expired."""
        entries = self._cache.get(uid, {})
        return entries.get(url) if url is not None else next(iter(entries.values()), None)

    def forget(self, uid: int, url: str | None = None) -> AttestedInstance | None:
        """Drop the cached key of ``uid`` at ``url`` (None: all of ``uid``'s); their next
        evaluation re-challenges. Returns the dropped instance (the first, for all)."""
        if url is None:
            return next(iter(self._cache.pop(uid, {}).values()), None)
        entries = self._cache.get(uid, {})
        dropped = entries.pop(url, None)
        if not entries:
            self._cache.pop(uid, None)
        return dropped

    def retain(self, uid: int, urls: Collection[str]) -> None:
        """Forget ``uid``'s instances that are no longer in its list."""
        for url in [u for u in self._cache.get(uid, {}) if u not in urls]:
            self.forget(uid, url)

    async def ensure(self, neuron: Neuron, url: str | None = None
                     ) -> tuple[AttestedInstance, bool]:
        """A verified instance of ``neuron`` at ``url`` (None: its published endpoint):
        ``(instance, from_cache)``.

        Raises :class:`EvaluationFailure` (and forgets the cached key) when a fresh
        challenge fails.
        """
        if not neuron.axon:
            raise EvaluationFailure("no_axon", "the hotkey has not published an endpoint")
        url = url or miner_url(neuron.axon)
        entry = self.cached(neuron.uid, url)
        fresh_needed = (
            entry is None
            or entry.hotkey != neuron.hotkey
            or entry.axon != neuron.axon
            or self._clock() >= entry.expires_at
            or self._rng.random() < self.rechallenge_probability
        )
        if not fresh_needed and entry is not None:
            return entry, True
        try:
            instance = await self.challenge(neuron, url)
        except EvaluationFailure:
            self.forget(neuron.uid, url)
            raise
        self._cache.setdefault(neuron.uid, {})[url] = instance
        return instance, False

    async def challenge(self, neuron: Neuron, url: str | None = None) -> AttestedInstance:
        """One fresh challenge of the instance at ``url`` (None: the published endpoint)
        + full verification (see module doc)."""
        if not neuron.axon:
            raise EvaluationFailure("no_axon", "the hotkey has not published an endpoint")
        base = url or miner_url(neuron.axon)
        nonce = self.challenges.issue()
        body = AttestRequest(nonce=nonce.hex()).model_dump_json().encode()
        headers = {"Content-Type": "application/json"}
        headers.update(sign_headers(self.wallet, method="POST", path="/attest", body=body,
                                    receiver_ss58=neuron.hotkey))
        url = base + "/attest"
        try:
            async with self.http.stream("POST", url, content=body, headers=headers) as resp:
                raw = await read_bounded(resp, MAX_ATTEST_RESPONSE_BYTES, "attest")
                status = resp.status_code
        except httpx.HTTPError as exc:
            raise from_http_error(exc, "attest") from exc
        if status != 200:
            raise EvaluationFailure("bad_response", f"attest: miner answered HTTP {status}")
        response, evidence, pubkey, receipt_key = self._parse(raw)
        now = self._clock()
        if self._own_book and not self.challenges.consume(nonce).ok:
            raise EvaluationFailure("timeout", "attest: answer arrived after the nonce expired")
        if self._pool is not None:
            verdict = await self._pool.verify(evidence, nonce=nonce, e2e_pubkey=pubkey,
                                              hotkey_ss58=neuron.hotkey, now=int(now),
                                              chute_id=response.chute_id,
                                              receipt_pubkey=receipt_key)
        else:
            verdict = await asyncio.to_thread(
                self.verifier.verify, evidence, nonce=nonce, e2e_pubkey=pubkey,
                hotkey_ss58=neuron.hotkey, now=int(now), chute_id=response.chute_id,
                receipt_pubkey=receipt_key)
        summary = _summary(verdict, response, now, self.ttl)
        if not verdict.ok:
            first = verdict.reasons[0]
            raise EvaluationFailure(f"attestation:{first.code}", first.message, summary)
        versions = tuple(v for v in response.e2e_versions if v in SUPPORTED_E2EE_VERSIONS)
        if E2EE_VERSION_V2 not in versions:
            raise EvaluationFailure("bad_response", "attest: instance does not serve E2EE v2",
                                    summary)
        manifest = None
        if verdict.manifest_sha384 and response.workload_manifest is not None:
            manifest = WorkloadManifest.from_dict(response.workload_manifest)  # verified above
        return AttestedInstance(neuron.uid, neuron.hotkey, neuron.axon, response.instance_id,
                                response.chute_id, response.model, pubkey, summary, versions,
                                receipt_key, manifest,
                                hashlib.sha256(evidence.tdx_quote).hexdigest(),
                                "" if base == miner_url(neuron.axon) else base)

    def _parse(self, raw: bytes) -> tuple[AttestResponse, Evidence, bytes, bytes]:
        try:
            data = parse_json(raw)
            response = AttestResponse.model_validate(data)
        except (ValueError, ValidationError) as exc:
            raise EvaluationFailure("bad_response",
                                    "attest: answer is not an AttestResponse") from exc
        if response.chute_id != chute_id_for_model(response.model):
            raise EvaluationFailure("bad_response", "attest: chute_id does not match the model")
        try:
            pubkey = decode_public_key(response.e2e_pubkey)
        except E2EEError as exc:
            raise EvaluationFailure("bad_response", "attest: e2e_pubkey is not ML-KEM-768") from exc
        if response.instance_id != instance_id_for_key(pubkey):
            raise EvaluationFailure("bad_response",
                                    "attest: instance_id is not derived from e2e_pubkey")
        try:  # an instance without an attested receipt key could never be billed
            receipt_key = decode_receipt_key(response.receipt_pubkey or "")
        except ValueError as exc:
            raise EvaluationFailure("bad_response",
                                    "attest: no valid receipt_pubkey (report_data layout v2 "
                                    "required)") from exc
        try:
            evidence = Evidence.from_wire(data)
        except AttestationError as exc:
            summary = _summary(None, response, self._clock(), self.ttl)
            raise EvaluationFailure("attestation:malformed_evidence",
                                    f"attest: evidence malformed ({type(exc).__name__})",
                                    summary) from exc
        return response, evidence, pubkey, receipt_key
