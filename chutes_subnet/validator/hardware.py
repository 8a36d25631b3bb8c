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
``attestation:`` reason, which resets its score). Within one uid's fleet a platform
may carry several instances (TDs), but a GPU counts for one instance only. Pure: the
holder map is returned for the next round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from .results import MinerResult

__all__ = ["FLEET_GPU_REUSED", "GPU_REUSED", "PLATFORM_REUSED", "hardware_of",
           "refuse_shared_hardware"]

log = logging.getLogger(__name__)

PLATFORM_REUSED = "attestation:platform_reused"
GPU_REUSED = "attestation:gpu_reused"
#: two instances of one uid presenting the same GPU: it counts once
FLEET_GPU_REUSED = "fleet:gpu_reused"


def hardware_of(result: MinerResult) -> tuple[str, ...]:
    """The hardware identities an accepted result proved (platform first)."""
    s = result.attestation
    if not result.ok or s is None:
        return ()
    return ((s.platform_id,) if s.platform_id else ()) + tuple(s.gpu_ids)


def refuse_shared_hardware(results: list[MinerResult], holders: Mapping[str, str]
                           ) -> tuple[list[MinerResult], dict[str, str]]:
    """``(results with every non-holder of shared hardware failed, next holders)``.

    ``holders`` maps an identity to the hotkey credited for it last round. Results are
    per instance (:mod:`.fleet_fetch`): the instances of one hotkey may share a platform (one
    host running several TDs), never a GPU; of several instances of one hotkey
    presenting the same GPU the first counts and the others fail as
    :data:`FLEET_GPU_REUSED` (a ``fleet`` reason: the uid keeps its history).
    """
    claimants: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        for ident in dict.fromkeys(hardware_of(r)):
            claimants.setdefault(ident, []).append(i)
    refused: dict[int, tuple[str, str]] = {}
    for ident, idxs in claimants.items():
        hotkeys = list(dict.fromkeys(results[i].hotkey for i in idxs))
        gpu = ident.startswith("gpu:")
        if len(hotkeys) == 1:
            winner: str | None = hotkeys[0]
        else:
            winner = holders.get(ident)
            reason = GPU_REUSED if gpu else PLATFORM_REUSED
            for i in idxs:
                if results[i].hotkey != winner and i not in refused:
                    refused[i] = (reason, f"{ident.split(':')[0]} {ident[-12:]} is presented by "
                                          f"{len(hotkeys)} uids; it earns for "
                                          + ("its incumbent only" if winner else "none of them"))
                    log.warning("uid %d (%s) refused: %s", results[i].uid, results[i].hotkey,
                                refused[i][1])
        own = [i for i in idxs if results[i].hotkey == winner and i not in refused]
        for i in own[1:] if gpu else ():
            refused[i] = (FLEET_GPU_REUSED, f"gpu {ident[-12:]} is presented by "
                                            f"{len(own)} instances of this uid; it counts once")
            log.warning("uid %d (%s): %s", results[i].uid, results[i].hotkey, refused[i][1])
    out = [replace(r, reason=refused[i][0], detail_text=refused[i][1])
           if i in refused else r for i, r in enumerate(results)]
    next_holders = {ident: r.hotkey for r in out for ident in hardware_of(r)}
    return out, next_holders
