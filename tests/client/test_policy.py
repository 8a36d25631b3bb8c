"""Client policy files: strict defaults, bounded TTLs, unknown keys refused, the simulated
TEE never implicit."""

from __future__ import annotations

import pytest

from chutes_subnet.client.client_policy import ClientPolicy
from chutes_subnet.errors import PolicyFileError


def test_client_policy_files(tmp_path) -> None:
    default = ClientPolicy.default()
    assert default.attestation.profiles == () and not default.dangerous_accept_simulated_tee
    assert (default.pin_ttl, default.failure_ttl) == (600.0, 30.0)
    p = tmp_path / "p.toml"
    p.write_text('version = 1\n[client]\npin_ttl_seconds = 60\n')
    assert ClientPolicy.load(p).pin_ttl == 60.0
    for bad, msg in (('version = 1\n[client]\npin_ttl_seconds = 0\n', "pin_ttl_seconds"),
                     ('version = 1\n[client]\npin_ttl_seconds = 99999\n', "pin_ttl_seconds"),
                     ('version = 1\n[client]\nsimulated = true\n', "unknown keys"),
                     ('version = 2\n', "version = 1")):
        p.write_text(bad)
        with pytest.raises(PolicyFileError, match=msg):
            ClientPolicy.load(p)
    with pytest.raises(TypeError):
        ClientPolicy.development()  # type: ignore[call-arg] - the opt-in is never implicit
