"""``verify="quorum"``: accept an instance's key when a stake-weighted validator quorum
vouches for it, without verifying TDX/GPU evidence on the client.

:meth:`QuorumVerifier.flow` (sans-I/O, see :mod:`chutes_subnet.client._flow`) for one
offered instance:

1. a fresh pin for exactly the listed key -> use it; a recent failure -> skip;
2. ``GET {gateway}/e2e/statements/{instance_id}``: the validator-signed statements
   (:mod:`chutes_subnet.attestation.verify.signed_statements`; bounded, typed parse errors);
3. the metagraph snapshot from the **client's own** source (``metagraph``: e.g. a
   :class:`~chutes_subnet.auth.MetagraphCache` over a :class:`~chutes_subnet.chain.Chain`
   the client reaches itself). Stakes and permits are never taken from the gateway: a
   gateway could invent validators;
4. :func:`~chutes_subnet.attestation.verify.signed_statements.check_quorum` off the event loop,
   at the current block as the client knows it (the snapshot's block advanced by the
   source's ``age``, when it has one: a stuck source goes stale), for the listed E2EE key, the listed receipt key and the
   requested chute;
5. pin the verdict (pass or fail) for the TTLs.

Trust: the client trusts that k validators holding the required stake share verified
the instance honestly (under policies it may restrict by hash); a gateway alone, or
validators without the stake, cannot make it encrypt to an unattested key.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import quote as urlquote

import httpx

from chutes_subnet.attestation.verify.signed_statements import (
    BLOCK_SECONDS,
    MAX_STATEMENTS_BYTES,
    QuorumRule,
    check_quorum,
    parse_statements,
)
from chutes_subnet.chain import Metagraph
from chutes_subnet.e2ee import decode_public_key
from chutes_subnet.errors import (
    E2EEError,
    InstanceVerificationError,
    StatementError,
)
from chutes_subnet.wire.call import SealTarget

from ._flow import Flow, Work, relay
from .pins import PinStore, pinned_verdict, refused, remember
from .verify import ClientVerdict

__all__ = ["STATEMENTS_TIMEOUT", "MetagraphSource", "QuorumVerifier"]

log = logging.getLogger("chutes_subnet.client.quorum")

STATEMENTS_TIMEOUT = {"connect": 10.0, "read": 30.0, "write": 10.0, "pool": 10.0}
_MAX_REMEMBERED_REJECTIONS = 64
#: the client's own view of the chain: the latest snapshot, or None when it has none
MetagraphSource = Callable[[], Metagraph | None]


class QuorumVerifier:
    """Reads validator statements through the gateway and checks them for a quorum."""

    def __init__(self, metagraph: MetagraphSource, rule: QuorumRule, *,
                 pin_ttl: float = 600.0, failure_ttl: float = 30.0,
                 dangerous_accept_simulated_tee: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not callable(metagraph):
            raise TypeError("metagraph must be a callable returning the client's own "
                            "Metagraph snapshot (e.g. a MetagraphCache)")
        self.metagraph = metagraph
        self.rule = rule
        self.accept_simulated = bool(dangerous_accept_simulated_tee)
        self.pins = PinStore(pin_ttl=pin_ttl, failure_ttl=failure_ttl, clock=monotonic)
        #: the latest refusals, newest last (what the application may inspect)
        self.rejected: deque[InstanceVerificationError] = deque(maxlen=_MAX_REMEMBERED_REJECTIONS)

    def flow(self, base: str, auth: dict[str, str], offer: SealTarget,
             chute_id: str | None = None) -> Flow[ClientVerdict]:
        """Verdict for ``offer`` serving ``chute_id`` (pinned, or from statements)."""
        iid = offer.instance_id
        try:
            listed = decode_public_key(base64.b64encode(offer.e2e_pubkey).decode("ascii"))
        except E2EEError:
            return self._remember(b"", refused(iid, "malformed_key",
                                                "the listed key is not an ML-KEM-768 key"))
        pinned = pinned_verdict(self.pins, iid, listed, chute_id)
        if pinned is not None:
            return pinned
        if offer.receipt_pubkey is None:
            return self._remember(listed, refused(
                iid, "no_receipt_key", "the gateway lists no receipt key: answers cannot be "
                "audited"))
        request = httpx.Request("GET", f"{base}/e2e/statements/{urlquote(iid, safe='')}",
                                headers=auth, extensions={"timeout": STATEMENTS_TIMEOUT})
        resp = yield from relay(request, MAX_STATEMENTS_BYTES, "the statements request")
        if isinstance(resp, tuple):
            return self._remember(listed, refused(iid, *resp))
        if resp.status_code != 200:
            return self._remember(listed, refused(
                iid, "relay_error", f"the gateway answered HTTP {resp.status_code}"))
        try:
            statements = parse_statements(resp.content)
        except StatementError as exc:
            return self._remember(listed, refused(iid, "malformed_statements", str(exc)))
        snapshot = self.metagraph()
        if snapshot is None:  # not pinned: the client's chain view may come back
            return self._remember(b"", refused(iid, "no_metagraph",
                                                "no metagraph snapshot to weigh statements"))
        now_block = self._now_block(snapshot)
        receipt = offer.receipt_pubkey
        quorum = yield Work(lambda: check_quorum(
            statements, instance_id=iid, e2e_pubkey=listed, receipt_pubkey=receipt,
            metagraph=snapshot, rule=self.rule, now_block=now_block, chute_id=chute_id,
            accept_simulated=self.accept_simulated))
        if quorum.reasons and quorum.reasons[0].code == "stale_metagraph":  # not pinned either
            return self._remember(b"", refused(iid, "stale_metagraph",
                                                quorum.reasons[0].message))
        verdict = ClientVerdict(
            iid, quorum.reasons, e2e_pubkey=listed if quorum.ok else None,
            e2e_versions=tuple(offer.e2e_versions),
            receipt_pubkey=receipt if quorum.ok else None,
            vouched_chute_id=chute_id if quorum.ok else None)
        return self._remember(listed, verdict)

    def _now_block(self, snapshot: Metagraph) -> int:
        """The current block as the client knows it: the snapshot's, advanced by the
        source's ``age`` (seconds since its last refresh, as a ``MetagraphCache`` says),
        so a source that stopped refreshing makes statements expire and the snapshot
        stale instead of freezing time."""
        age = getattr(self.metagraph, "age", None)
        if isinstance(age, (int, float)) and age > 0:
            return snapshot.block + int(age // BLOCK_SECONDS)
        return snapshot.block

    def _remember(self, listed: bytes, verdict: ClientVerdict) -> ClientVerdict:
        return remember(self.pins, self.rejected, log, listed, verdict)
