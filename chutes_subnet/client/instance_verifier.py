"""Verify before you send: the client challenges an instance through the gateway.

:meth:`InstanceVerifier.flow` (sans-I/O, see :mod:`chutes_subnet.client._flow`) for
one offered instance:

1. a fresh pin for exactly the listed key -> use it; a recent failure -> skip;
2. ``POST {gateway}/e2e/attest/{instance_id}`` with a fresh 32-byte nonce chosen
   here (the gateway relays it to the miner, btauth-signed); 429 ``instance_busy``
   (challenges of this instance already in flight, e.g. concurrent cold requests)
   waits and looks for the pin again; any other 429 raises
   :class:`~chutes_subnet.errors.AttestationRateLimited`; a timeout or other refusal
   fails the instance (``relay_timeout`` / ``relay_error``);
3. for a real quote whose platform collateral is not cached: ``POST
   {gateway}/e2e/collateral`` with the quote (Intel-signed data, so the relay
   needs no trust; DCAP checks it);
4. :func:`~chutes_subnet.client.verify.check_instance` off the event loop;
5. pin the verdict (pass or fail) for the policy's TTL.

Nothing is ever encrypted to a key this did not return a passing verdict for.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import quote as urlquote

import httpx

from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.simulated_tee import is_simulated_quote
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.e2ee import decode_public_key
from chutes_subnet.errors import (
    AttestationError,
    AttestationRateLimited,
    CollateralError,
    E2EEError,
    InstanceVerificationError,
    PayloadTooLargeError,
)
from chutes_subnet.wire.call import SealTarget
from chutes_subnet.wire.protocol import (
    ATTEST_NONCE_BYTES,
    MAX_ATTEST_RESPONSE_BYTES,
    MAX_COLLATERAL_BYTES,
)

from ._flow import Flow, Sleep, Step, Work, relay
from .client_policy import ClientPolicy
from .pins import CollateralCache, PinStore, pinned_verdict, refused, remember
from .verify import ClientVerdict, ParsedAnswer, check_instance, parse_answer

__all__ = ["ATTEST_TIMEOUT", "InstanceVerifier"]

log = logging.getLogger("chutes_subnet.client.instance_verifier")

#: seconds for one relayed challenge (evidence collection on real hardware takes seconds)
ATTEST_TIMEOUT = {"connect": 10.0, "read": 60.0, "write": 10.0, "pool": 10.0}
_MAX_REMEMBERED_REJECTIONS = 64
#: retries (with backoff, 50 ms .. 1 s) while the gateway says a challenge of this
#: instance is already in flight: concurrent cold requests share the first one's pin
_BUSY_RETRIES = 6


def _relay_reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("reason", ""))[:64] if isinstance(body, dict) else ""


class InstanceVerifier:
    """Challenges instances through the gateway, verifies them, pins the verdicts."""

    def __init__(self, policy: ClientPolicy, *, require_v2: bool = True,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 nonce_source: Callable[[], bytes] = lambda: os.urandom(ATTEST_NONCE_BYTES),
                 ) -> None:
        self.policy = policy
        self.require_v2 = require_v2
        self.collateral = CollateralCache()
        self.pins = PinStore(pin_ttl=policy.pin_ttl, failure_ttl=policy.failure_ttl,
                             clock=monotonic)
        self.verifier = Verifier(
            policy.attestation, self.collateral,
            dangerous_accept_simulated_tee=policy.dangerous_accept_simulated_tee)
        self._clock = clock
        self._nonce = nonce_source
        #: the latest refusals, newest last (what the application may inspect)
        self.rejected: deque[InstanceVerificationError] = deque(maxlen=_MAX_REMEMBERED_REJECTIONS)

    def flow(self, base: str, auth: dict[str, str], offer: SealTarget,
             chute_id: str | None = None) -> Flow[ClientVerdict]:
        """Verdict for ``offer`` serving ``chute_id`` (pinned, or from a fresh
        challenge); see module doc."""
        iid = offer.instance_id
        try:  # the length check of the one key decoder
            listed = decode_public_key(base64.b64encode(offer.e2e_pubkey).decode("ascii"))
        except E2EEError:
            return self._remember(b"", refused(iid, "malformed_key",
                                                "the listed key is not an ML-KEM-768 key"))
        for attempt in range(_BUSY_RETRIES + 1):
            pinned = pinned_verdict(self.pins, iid, listed, chute_id)
            if pinned is not None:
                return pinned
            nonce = self._nonce()
            request = httpx.Request(
                "POST", f"{base}/e2e/attest/{urlquote(iid, safe='')}",
                headers={**auth, "Content-Type": "application/json"},
                content=b'{"nonce":"' + nonce.hex().encode() + b'"}',
                extensions={"timeout": ATTEST_TIMEOUT})
            got = yield from relay(request, MAX_ATTEST_RESPONSE_BYTES, "the attestation relay")
            if isinstance(got, tuple):
                return self._remember(listed, refused(iid, *got))
            resp = got
            if resp.status_code == 429 and _relay_reason(resp) == "instance_busy" \
                    and attempt < _BUSY_RETRIES:
                # another request of ours is challenging it right now: its pin will do
                yield Sleep(min(1.0, 0.05 * 2 ** attempt))
                continue
            break
        if resp.status_code == 429:
            try:
                retry = float(resp.headers.get("retry-after", "1"))
            except ValueError:
                retry = 1.0
            raise AttestationRateLimited(max(0.0, min(retry, 3600.0)))
        if resp.status_code != 200:
            why = _relay_reason(resp)
            return self._remember(listed, refused(
                iid, "relay_error", f"the gateway answered HTTP {resp.status_code}"
                + (f" ({why})" if why else "")))
        try:
            parsed = parse_answer(resp.content)
        except AttestationError as exc:
            return self._remember(listed, refused(iid, "malformed_answer", str(exc)))
        now = int(self._clock())
        if self._needs_collateral(parsed, now):
            yield from self._fetch_collateral(base, auth, parsed.evidence.tdx_quote, now)
        verdict = yield Work(lambda: check_instance(
            self.verifier, instance_id=iid, offered_pubkey=listed, nonce=nonce,
            answer=parsed, now=now, require_v2=self.require_v2, chute_id=chute_id))
        return self._remember(listed, verdict)

    def _needs_collateral(self, parsed: ParsedAnswer, now: int) -> bool:
        quote = parsed.evidence.tdx_quote
        try:
            if parsed.evidence.simulated or is_simulated_quote(parse_quote(quote)):
                return False  # the verifier refuses it unless the policy allows simulation
            return not self.collateral.has(quote, now)
        except (AttestationError, ValueError):
            return False  # the verifier reports the malformed quote

    def _fetch_collateral(self, base: str, auth: dict[str, str], quote: bytes,
                          now: int) -> Flow[None]:
        request = httpx.Request("POST", f"{base}/e2e/collateral", content=quote,
                                headers={**auth, "Content-Type": "application/octet-stream"},
                                extensions={"timeout": ATTEST_TIMEOUT})
        try:
            resp = yield Step(request, True, soft=True, limit=MAX_COLLATERAL_BYTES)
        except (httpx.TransportError, PayloadTooLargeError):
            return  # the verifier reports collateral_unavailable
        if resp.status_code == 200:
            try:
                self.collateral.put(quote, resp.content, now)
            except CollateralError as exc:
                log.warning("gateway collateral unusable: %s", exc)

    def _remember(self, listed: bytes, verdict: ClientVerdict) -> ClientVerdict:
        return remember(self.pins, self.rejected, log, listed, verdict)
