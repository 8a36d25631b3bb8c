"""Verifier step "workload": which release runs, proven through RTMR3.

Checks, in order (each failure is its own :class:`ReasonCode`; the first one stops):

1. ``event_log_format``           the log parses (strict, bounded)
2. ``event_log_digest_mismatch``  every RTMR3 event follows the runtime-event digest rule
3. ``event_log_replay_mismatch``  replaying RTMR3 from zeros gives the quote's RTMR3
4. ``workload_event_missing``     exactly one workload event ...
   ``workload_event_duplicate``   ... (two would leave open which release serves)
5. ``manifest_format``            the manifest parses (unknown fields refused)
6. ``manifest_not_measured``      SHA-384 of its canonical bytes is the event's payload
7. ``manifest_wrong_chute``       it names the chute the instance claims to serve
8. ``manifest_not_published``     it is one of the chute's published manifests

Published manifests come from a :class:`ManifestSource` (the policy file today; the
chute registry plugs in through the same one-method protocol). Pure: no I/O, no clock.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .eventlog import EventLogError, parse_event_log, replay
from .manifest import ManifestError, WorkloadManifest
from .reasons import Reason, ReasonCode

__all__ = ["ManifestSource", "StaticManifestSource", "WorkloadCheck", "check_workload"]


class ManifestSource(Protocol):
    """Where the verifier reads the manifests a chute's owner has published."""

    def published_manifests(self, chute_id: str) -> Sequence[WorkloadManifest]:
        """Every manifest currently accepted for ``chute_id`` (empty: none)."""
        ...


class StaticManifestSource:
    """A fixed set of manifests (the policy file's ``[[workloads]]``)."""

    def __init__(self, manifests: Sequence[WorkloadManifest] = ()) -> None:
        self._by_chute: dict[str, list[WorkloadManifest]] = {}
        for m in manifests:
            self._by_chute.setdefault(m.chute_id, []).append(m)

    def published_manifests(self, chute_id: str) -> Sequence[WorkloadManifest]:
        return tuple(self._by_chute.get(chute_id, ()))


@dataclass(frozen=True)
class WorkloadCheck:
    """Outcome: the verified manifest (when every check passed) or the reason."""

    manifest: WorkloadManifest | None
    reason: Reason | None


def _fail(code: ReasonCode, message: str) -> WorkloadCheck:
    return WorkloadCheck(None, Reason.of(code, message))


def check_workload(event_log: object, manifest: object, rtmr3: bytes, chute_id: str | None,
                   source: ManifestSource | None, *,
                   require_published: bool = True) -> WorkloadCheck:
    """Run checks 1-8 on the wire forms against the verified ``rtmr3``.

    ``require_published=False`` (development policies only) skips check 8 for a chute
    that has no published manifest at all.
    """
    try:
        events = parse_event_log(event_log)
    except EventLogError as exc:
        return _fail(ReasonCode.EVENT_LOG_FORMAT, str(exc))
    rtmr3_events = [e for e in events if e.imr == 3]
    if not all(e.follows_digest_rule for e in rtmr3_events):
        return _fail(ReasonCode.EVENT_LOG_DIGEST_MISMATCH,
                     "an RTMR3 event's digest does not follow the runtime-event rule")
    if not hmac.compare_digest(replay(rtmr3_events), rtmr3):
        return _fail(ReasonCode.EVENT_LOG_REPLAY_MISMATCH,
                     "the RTMR3 event log does not replay to the quote's RTMR3")
    workload = [e for e in rtmr3_events if e.is_workload]
    if not workload:
        return _fail(ReasonCode.WORKLOAD_EVENT_MISSING, "RTMR3 measures no workload manifest")
    if len(workload) > 1:
        return _fail(ReasonCode.WORKLOAD_EVENT_DUPLICATE,
                     f"RTMR3 measures {len(workload)} workload manifests; exactly one is allowed")
    try:
        parsed = WorkloadManifest.from_dict(manifest)
    except ManifestError as exc:
        return _fail(ReasonCode.MANIFEST_FORMAT, str(exc))
    if not hmac.compare_digest(parsed.sha384(), workload[0].payload):
        return _fail(ReasonCode.MANIFEST_NOT_MEASURED,
                     "the manifest sent is not the one measured into RTMR3")
    if chute_id is None or parsed.chute_id != chute_id:
        return _fail(ReasonCode.MANIFEST_WRONG_CHUTE,
                     "the measured manifest is for another chute")
    published = source.published_manifests(chute_id) if source is not None else ()
    if not published and not require_published:
        return WorkloadCheck(parsed, None)
    if not any(hmac.compare_digest(p.sha384(), parsed.sha384()) for p in published):
        return _fail(ReasonCode.MANIFEST_NOT_PUBLISHED,
                     f"manifest {parsed.sha384().hex()[:16]} is not published for this chute")
    return WorkloadCheck(parsed, None)
