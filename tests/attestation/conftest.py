"""Fixtures of the attestation tests."""

from __future__ import annotations

import pytest

from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier


@pytest.fixture(scope="module")
def dev_verifier() -> Verifier:
    """A development-mode verifier: accepts (and flags) the simulated TEE."""
    return Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
