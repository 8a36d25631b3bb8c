"""Hardware counted once: one TDX platform and one GPU earn for one uid per round.

Attestation proves which machine answered (:mod:`chutes_subnet.attestation.verify.hardware_identity`:
the PCK platform's PPID, each GPU's device identity certificate). Several hotkeys
presenting the same platform or the same GPU are one operator running one machine
several times over (a quote binds the hotkey it was made for, so nobody else can
present it); that machine earns for one uid only.

Which uid: the one that held the identity in the previous round (the incumbent). If
no claimant is the incumbent, none is credited, as for shared E2EE keys
(:mod:`.identity`): ownership is ambiguous, so nobody gets the score. Every other
claimant fails the round with :data:`PLATFORM_REUSED` or :data:`GPU_REUSED` (an
``attestation:`` reason, which resets its score). Pure: the holder map is returned
for the next round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from .results import MinerResult

__all__ = ["GPU_REUSED", "PLATFORM_REUSED", "hardware_of", "refuse_shared_hardware"]

log = logging.getLogger(__name__)

PLATFORM_REUSED = "attestation:platform_reused"
GPU_REUSED = "attestation:gpu_reused"


def hardware_of(result: MinerResult) -> tuple[str, ...]:
    """The hardware identities an accepted result proved (platform first)."""
    s = result.attestation
    if not result.ok or s is None:
        return ()
    return ((s.platform_id,) if s.platform_id else ()) + tuple(s.gpu_ids)


def refuse_shared_hardware(results: list[MinerResult], holders: Mapping[str, str]
                           ) -> tuple[list[MinerResult], dict[str, str]]:
    """``(results with every non-holder of shared hardware failed, next holders)``.

    ``holders`` maps an identity to the hotkey credited for it last round.
    """
    claimants: dict[str, list[MinerResult]] = {}
    for r in results:
        for ident in dict.fromkeys(hardware_of(r)):
            claimants.setdefault(ident, []).append(r)
    refused: dict[int, tuple[str, str]] = {}
    for ident, group in claimants.items():
        if len(group) < 2:
            continue
        holder = holders.get(ident)
        reason = PLATFORM_REUSED if not ident.startswith("gpu:") else GPU_REUSED
        for r in group:
            if r.hotkey != holder and r.uid not in refused:
                refused[r.uid] = (reason, f"{ident.split(':')[0]} {ident[-12:]} is presented by "
                                          f"{len(group)} uids; it earns for "
                                          + ("its incumbent only" if holder else "none of them"))
                log.warning("uid %d (%s) refused: %s", r.uid, r.hotkey, refused[r.uid][1])
    out = [replace(r, reason=refused[r.uid][0], detail_text=refused[r.uid][1])
           if r.uid in refused else r for r in results]
    next_holders = {ident: r.hotkey for r in out for ident in hardware_of(r)}
    return out, next_holders
