"""One attested key, one uid: refuse every uid that presents a key another uid holds.

An instance id is derived from its attested E2EE key, so two uids presenting the same
instance id present the same key. Both can pass the benchmark only by sharing the
private key (one instance earning for two hotkeys) or by one relaying to the other;
either way the key earns for one uid only. The holder is the hotkey already registered
with that id (the incumbent); if none of the claimants holds it, none is credited
(ownership is ambiguous, so nobody gets the traffic or the score).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from .results import MinerResult

__all__ = ["DUPLICATE_REASON", "holders_from", "refuse_duplicate_keys"]

log = logging.getLogger(__name__)

DUPLICATE_REASON = "attestation:duplicate_instance"


def _instance_id(result: MinerResult) -> str | None:
    return result.attestation.instance_id if result.ok and result.attestation else None


def refuse_duplicate_keys(results: list[MinerResult],
                          holder_of: Callable[[str], str | None]) -> list[MinerResult]:
    """``results`` with every non-holder of a shared instance id failed.

    ``holder_of(instance_id)`` is the hotkey that holds the id in the registry (or
    ``None``). A single uid presenting an id held by another hotkey is refused too.
    """
    claimants: dict[str, list[MinerResult]] = {}
    for r in results:
        iid = _instance_id(r)
        if iid is not None:
            claimants.setdefault(iid, []).append(r)
    refused: dict[int, str] = {}
    for iid, group in claimants.items():
        holder = holder_of(iid)
        if len(group) == 1 and holder in (None, group[0].hotkey):
            continue
        for r in group:
            if r.hotkey != holder:
                refused[r.uid] = (f"instance {iid} is held by "
                                  + ("another uid" if holder else f"{len(group)} uids at once"))
                log.warning("uid %d (%s) refused: %s", r.uid, r.hotkey, refused[r.uid])
    return [replace(r, reason=DUPLICATE_REASON, detail_text=refused[r.uid])
            if r.uid in refused else r for r in results]


def holders_from(published: Mapping[int, tuple[str, str]],
                 registry_holder: Callable[[str], str | None] | None) -> Callable[[str], str | None]:
    """``holder_of`` from this validator's published map, then the registry."""
    mine = {iid: hotkey for hotkey, iid in published.values()}

    def holder_of(iid: str) -> str | None:
        if iid in mine:
            return mine[iid]
        return registry_holder(iid) if registry_holder is not None else None

    return holder_of
