"""What a development-mode verifier logs: the acceptance of simulated evidence is a
WARNING once per verifier, not once per verdict (a fleet-sized round verifies
thousands), and every verdict still says ``simulated``."""

from __future__ import annotations

import logging
import os

import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.e2ee import KeyPair

HOTKEY = "5LoggingTestHotkey"
ACCEPTED = "accepted SIMULATED attestation evidence"


@pytest.fixture(scope="module")
def machine() -> tuple[SimulatedProvider, bytes]:
    return SimulatedProvider(seed=b"verifier-logging"), KeyPair.generate().public_bytes


def _verify(verifier: Verifier, machine: tuple[SimulatedProvider, bytes], *,
            bind: str = HOTKEY):
    provider, pubkey = machine
    nonce = os.urandom(32)
    evidence = provider.collect(nonce, pubkey, bind)
    return verifier.verify(evidence, nonce=nonce, e2e_pubkey=pubkey, hotkey_ss58=HOTKEY)


def _accepted(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.levelno for r in caplog.records if ACCEPTED in r.getMessage()]


def test_accepting_simulated_evidence_warns_once_per_verifier(machine, caplog) -> None:
    verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
    with caplog.at_level(logging.DEBUG, logger="chutes_subnet.attestation.verify.verifier"):
        verdicts = [_verify(verifier, machine) for _ in range(3)]
    assert all(v.ok and v.simulated for v in verdicts)
    assert _accepted(caplog) == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="chutes_subnet.attestation.verify.verifier"):
        other = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
        assert _verify(other, machine).ok
    assert _accepted(caplog) == [logging.WARNING]  # another verifier warns again


def test_a_refused_verdict_is_not_logged_as_accepted(machine, caplog) -> None:
    verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
    with caplog.at_level(logging.DEBUG, logger="chutes_subnet.attestation.verify.verifier"):
        verdict = _verify(verifier, machine, bind="5SomeoneElse")  # bound to another hotkey
        assert not verdict.ok
        assert _verify(verifier, machine).ok
    assert _accepted(caplog) == [logging.WARNING]  # the first acceptance still warns
