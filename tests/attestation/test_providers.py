"""Choosing the miner's evidence provider: simulated, TDX (fails when the device is absent),
unknown."""

from __future__ import annotations

import pytest

from chutes_subnet.attestation.providers.choose import make_provider
from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.errors import AttestationError


def test_make_provider():
    assert isinstance(make_provider("simulated", gpu_count=1), SimulatedProvider)
    with pytest.raises(AttestationError, match="TDX"):
        make_provider("tdx", tsm_dir="/nonexistent/tsm/report")
    with pytest.raises(AttestationError, match="unknown"):
        make_provider("sgx")
