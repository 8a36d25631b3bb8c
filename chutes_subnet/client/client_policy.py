"""What a client accepts: the attestation policy plus pinning times, as data.

A client policy file is a validator policy file (``[tcb]``, ``[td]``,
``[[profiles]]``; see :mod:`chutes_subnet.attestation.verify.policy`) with an optional
``[client]`` table::

    [client]
    pin_ttl_seconds = 600       # a verified (instance id -> key) pin lives this long
    failure_ttl_seconds = 30    # a failed instance is skipped this long

The default is the validator's packaged policy (``attestation/verify/default_policy.toml``:
TD-field rules, workload manifests required, no measurement profile allowlisted yet),
so a default client fails closed until its user names the images and manifests they
trust, and never drifts from what validators accept. Accepting simulated (forgeable)
TEE evidence is never a file setting: it is the ``dangerous_accept_simulated_tee``
argument of :meth:`ClientPolicy.development`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.errors import PolicyFileError

__all__ = ["MAX_PIN_TTL", "ClientPolicy"]

#: upper bound on any pin lifetime (a verdict is a statement about one moment)
MAX_PIN_TTL = 3600.0
_CLIENT_KEYS = {"pin_ttl_seconds", "failure_ttl_seconds"}


def _seconds(table: dict[str, Any], name: str, default: float) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value <= MAX_PIN_TTL:
        raise PolicyFileError(f"client.{name} must be a number of seconds in (0, {MAX_PIN_TTL:g}]")
    return float(value)


@dataclass(frozen=True)
class ClientPolicy:
    """The attestation policy a client applies, and how long it trusts a verdict."""

    attestation: Policy
    pin_ttl: float = 600.0
    failure_ttl: float = 30.0
    dangerous_accept_simulated_tee: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClientPolicy:
        """Build from a parsed TOML document; raises ``PolicyFileError``."""
        table = d.get("client", {})
        if not isinstance(table, dict):
            raise PolicyFileError("[client] must be a table")
        unknown = set(table) - _CLIENT_KEYS
        if unknown:
            raise PolicyFileError(f"client: unknown keys {sorted(unknown)}")
        rest = {k: v for k, v in d.items() if k != "client"}
        return cls(Policy.from_dict(rest), _seconds(table, "pin_ttl_seconds", 600.0),
                   _seconds(table, "failure_ttl_seconds", 30.0))

    @classmethod
    def load(cls, path: str | Path) -> ClientPolicy:
        """Read a client policy file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyFileError(f"cannot read client policy file {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def default(cls) -> ClientPolicy:
        """The validator's packaged policy with the default pin times (fails closed)."""
        return cls(Policy.default())

    @classmethod
    def development(cls, *, gpu_model: str = "H100", gpu_count: int = 8,
                    dangerous_accept_simulated_tee: bool) -> ClientPolicy:
        """Default plus the simulated TD's profile, for local development only.

        ``dangerous_accept_simulated_tee`` must be passed explicitly (True to accept
        forgeable evidence); there is no way to switch it on from a file or env var.
        """
        base = cls.default()
        attestation = Policy.development(gpu_model=gpu_model, gpu_count=gpu_count)
        return replace(base, attestation=attestation,
                       dangerous_accept_simulated_tee=bool(dangerous_accept_simulated_tee))
