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
from collections.abc import Callable, Iterable
from dataclasses import replace

from .results import MinerResult

__all__ = ["DUPLICATE_REASON", "FLEET_DUPLICATE", "holders_from", "refuse_duplicate_keys"]

log = logging.getLogger(__name__)

DUPLICATE_REASON = "attestation:duplicate_instance"
#: one uid listing one instance (one key) under several URLs: counted once
FLEET_DUPLICATE = "fleet:duplicate_instance"


def _instance_id(result: MinerResult) -> str | None:
    return result.attestation.instance_id if result.ok and result.attestation else None


def refuse_duplicate_keys(results: list[MinerResult],
                          holder_of: Callable[[str], str | None]) -> list[MinerResult]:
    """``results`` with every non-holder of a shared instance id failed.

    ``holder_of(instance_id)`` is the hotkey that holds the id in the registry (or
    ``None``). A single uid presenting an id held by another hotkey is refused too.
    Results are per instance: a uid that lists one instance under several URLs is
    credited for its first listing, the others fail as :data:`FLEET_DUPLICATE` (a
    ``fleet`` reason: its other instances keep their history).
    """
    claimants: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        iid = _instance_id(r)
        if iid is not None:
            claimants.setdefault(iid, []).append(i)
    refused: dict[int, tuple[str, str]] = {}
    for iid, idxs in claimants.items():
        holder = holder_of(iid)
        hotkeys = {results[i].hotkey for i in idxs}
        if len(hotkeys) == 1 and holder in (None, results[idxs[0]].hotkey):
            holder = results[idxs[0]].hotkey  # one uid: no contest, only repeats
        else:
            for i in idxs:
                if results[i].hotkey != holder:
                    refused[i] = (DUPLICATE_REASON, f"instance {iid} is held by "
                                  + ("another uid" if holder else f"{len(hotkeys)} uids at once"))
                    log.warning("uid %d (%s) refused: %s", results[i].uid, results[i].hotkey,
                                refused[i][1])
        own = [i for i in idxs if results[i].hotkey == holder]
        for i in own[1:]:
            refused[i] = (FLEET_DUPLICATE, f"instance {iid} is listed more than once by its uid")
    return [replace(r, reason=refused[i][0], detail_text=refused[i][1])
            if i in refused else r for i, r in enumerate(results)]


def holders_from(published: Iterable[tuple[str, str]],
                 registry_holder: Callable[[str], str | None] | None) -> Callable[[str], str | None]:
    """``holder_of`` from this validator's published ``(hotkey, instance_id)`` pairs,
    then the registry."""
    mine = {iid: hotkey for hotkey, iid in published}

    def holder_of(iid: str) -> str | None:
        if iid in mine:
            return mine[iid]
        return registry_holder(iid) if registry_holder is not None else None

    return holder_of
