"""Operator attestation policy: data loaded from a TOML file, judged by ``check()``.

The policy decides what *verified* evidence is acceptable: TCB statuses and
advisories, the DEBUG attribute, which measurement profiles (MRTD + RTMR0-3) may
run, and the GPUs each profile must bring. ``check()`` returns violations and fails
closed: a missing input is a violation, never a skip. The file format is documented
in ``default_policy.toml`` and ``docs/attestation.md``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from chutes_subnet.errors import PolicyFileError

from .quote import Measurements
from .reasons import Reason, ReasonCode

__all__ = ["TCB_STATUSES", "MeasurementProfile", "EvidenceFacts", "Policy"]

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
)
_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")


@dataclass(frozen=True)
class MeasurementProfile:
    """One allowlisted software stack and the GPUs it must run with."""

    name: str
    measurements: Measurements
    gpu_model: str | None = None
    gpu_count: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasurementProfile:
        """Build from a policy-file table; raises ``PolicyFileError``."""
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyFileError("every profile needs a non-empty name")
        regs: list[bytes] = []
        for reg in _REGISTERS:
            try:
                value = bytes.fromhex(str(d[reg]))
            except (KeyError, ValueError) as exc:
                raise PolicyFileError(f"profile {name!r}: {reg} must be 96 hex characters") from exc
            if len(value) != 48:
                raise PolicyFileError(f"profile {name!r}: {reg} must be 96 hex characters")
            regs.append(value)
        count = d.get("gpu_count", 0)
        model = d.get("gpu_model")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 16:
            raise PolicyFileError(f"profile {name!r}: gpu_count must be an integer 0..16")
        if count and (not isinstance(model, str) or not model):
            raise PolicyFileError(f"profile {name!r}: gpu_model is required when gpu_count > 0")
        unknown = set(d) - {"name", "gpu_model", "gpu_count", *_REGISTERS}
        if unknown:
            raise PolicyFileError(f"profile {name!r}: unknown keys {sorted(unknown)}")
        return cls(name, Measurements(*regs), model if count else None, count)


@dataclass(frozen=True)
class EvidenceFacts:
    """Verified facts the policy judges (``None`` = not established)."""

    tcb_status: str | None
    advisories: tuple[str, ...]
    debug: bool | None
    measurements: Measurements | None
    gpu_model: str | None
    gpu_count: int


@dataclass(frozen=True)
class Policy:
    """What verified evidence the validator accepts. Load with :meth:`load`."""

    accepted_tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    accepted_advisories: frozenset[str] = frozenset()
    dangerous_allow_debug: bool = False
    profiles: tuple[MeasurementProfile, ...] = field(default=())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        """Build from the parsed TOML document; raises ``PolicyFileError``."""
        if d.get("version") != 1:
            raise PolicyFileError("policy file must declare version = 1")
        tcb, td = d.get("tcb", {}), d.get("td", {})
        statuses = tcb.get("accepted_statuses", ["UpToDate"])
        if not isinstance(statuses, list) or not statuses:
            raise PolicyFileError("tcb.accepted_statuses must be a non-empty list")
        bad = [s for s in statuses if s not in TCB_STATUSES]
        if bad:
            raise PolicyFileError(f"unknown or never-acceptable TCB statuses: {bad}")
        advisories = tcb.get("accepted_advisories", [])
        if not isinstance(advisories, list) or not all(isinstance(a, str) for a in advisories):
            raise PolicyFileError("tcb.accepted_advisories must be a list of strings")
        allow_debug = td.get("dangerous_allow_debug", False)
        if not isinstance(allow_debug, bool):
            raise PolicyFileError("td.dangerous_allow_debug must be true or false")
        raw_profiles = d.get("profiles", [])
        if not isinstance(raw_profiles, list) or not all(isinstance(p, dict) for p in raw_profiles):
            raise PolicyFileError("profiles must be an array of tables ([[profiles]])")
        profiles = tuple(MeasurementProfile.from_dict(p) for p in raw_profiles)
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise PolicyFileError("profile names must be unique")
        return cls(frozenset(statuses), frozenset(advisories), allow_debug, profiles)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read an operator's TOML policy file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyFileError(f"cannot read policy file {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def default(cls) -> Policy:
        """Production defaults from the packaged ``default_policy.toml``."""
        text = resources.files(__package__).joinpath("default_policy.toml").read_text("utf-8")
        return cls.from_dict(tomllib.loads(text))

    @classmethod
    def development(cls, *, gpu_model: str = "H100", gpu_count: int = 8) -> Policy:
        """Defaults plus the ``simulated-dev`` profile (pair with a dev-mode verifier)."""
        from .simulated import measure_simulated_profile

        base = cls.default()
        sim = measure_simulated_profile(gpu_model=gpu_model, gpu_count=gpu_count)
        return replace(base, profiles=(*base.profiles, sim))

    def with_profiles(self, *profiles: MeasurementProfile) -> Policy:
        """A copy with extra allowlisted profiles."""
        return replace(self, profiles=(*self.profiles, *profiles))

    def match_profile(self, measurements: Measurements | None) -> MeasurementProfile | None:
        """The first profile whose five registers all equal ``measurements``."""
        if measurements is None:
            return None
        for profile in self.profiles:
            if profile.measurements == measurements:
                return profile
        return None

    def check(self, facts: EvidenceFacts) -> list[Reason]:
        """Violations of this policy (empty list = acceptable). Fails closed."""
        out: list[Reason] = []
        if facts.tcb_status not in self.accepted_tcb_statuses:
            out.append(Reason.of(ReasonCode.TCB_STATUS_NOT_ACCEPTED,
                                 f"TCB status {facts.tcb_status or 'unknown'} is not accepted"))
        extra = sorted(set(facts.advisories) - self.accepted_advisories)
        if extra:
            out.append(Reason.of(ReasonCode.ADVISORY_NOT_ACCEPTED,
                                 f"platform is affected by advisories not accepted: {', '.join(extra)}"))
        if facts.debug is None or (facts.debug and not self.dangerous_allow_debug):
            out.append(Reason.of(ReasonCode.DEBUG_TD, "the TD runs in DEBUG mode (memory readable by the host)"))
        profile = self.match_profile(facts.measurements)
        if profile is None:
            out.append(Reason.of(ReasonCode.MEASUREMENT_NOT_ALLOWED,
                                 "MRTD/RTMR0-3 match no allowlisted measurement profile"))
            return out
        if facts.gpu_count != profile.gpu_count:
            out.append(Reason.of(ReasonCode.GPU_COUNT_MISMATCH,
                                 f"profile {profile.name} expects {profile.gpu_count} GPUs, "
                                 f"evidence proves {facts.gpu_count}"))
        if profile.gpu_count and (facts.gpu_model or "").upper() != (profile.gpu_model or "").upper():
            out.append(Reason.of(ReasonCode.GPU_MODEL_MISMATCH,
                                 f"profile {profile.name} expects {profile.gpu_model} GPUs, "
                                 f"evidence proves {facts.gpu_model or 'none'}"))
        return out
