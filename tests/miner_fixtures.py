"""Test support: the real miner app (embedded model, simulated TEE) for end-to-end
gateway/client tests, plus the registry record a validator would write for it."""

from __future__ import annotations

import time
from typing import Any

from chutes_subnet.attestation import SimulatedProvider
from chutes_subnet.auth import ValidatorGate
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import InstanceIdentity, MinerConfig, create_app
from chutes_subnet.registry import InstanceRecord
from tests.servers import UvicornThread

__all__ = ["start_real_miner", "miner_record", "DEV_MINER_HOTKEY"]

#: A syntactically valid hotkey for miners whose callers are not checked.
DEV_MINER_HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def start_real_miner(model: str, *, hotkey: str = DEV_MINER_HOTKEY,
                     gate: ValidatorGate | None = None, **config: Any
                     ) -> tuple[UvicornThread, InstanceIdentity]:
    """The real miner app serving ``model`` on loopback (``gate=None``: open invoke)."""
    cfg = MinerConfig(tee="simulated", model_id=model,
                      invoke_auth="validator" if gate is not None else "none", **config)
    app = create_app(cfg, hotkey_ss58=hotkey, backend=make_backend("embedded", model_id=model),
                     provider=SimulatedProvider(gpu_count=1), gate=gate)
    return UvicornThread(app).start(), app.state.instance


def miner_record(inst: InstanceIdentity, url: str, *, score: float = 1.0, ttl: float = 600.0,
                 uid: int = 1) -> InstanceRecord:
    """What a validator registers after verifying this instance's attestation."""
    now = time.time()
    return InstanceRecord(instance_id=inst.instance_id, chute_id=inst.chute_id,
                          model=inst.model_id, url=url, hotkey=inst.hotkey, uid=uid,
                          e2e_pubkey=inst.e2e_pubkey, e2e_versions=inst.e2e_versions,
                          receipt_pubkey=inst.receipt_pubkey,
                          verified_at=now, expires_at=now + ttl, score=score, simulated=True)
