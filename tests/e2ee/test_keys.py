"""Key pairs never serialise and never show their secret."""

from __future__ import annotations

import pickle

import pytest

from chutes_subnet.e2ee import KeyPair


def test_keypair_refuses_pickling_and_hides_secret_in_repr():
    kp = KeyPair.generate()
    with pytest.raises(TypeError):
        pickle.dumps(kp)
    assert "ML-KEM-768" in repr(kp) and kp.fingerprint in repr(kp)
