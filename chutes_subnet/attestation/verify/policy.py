"""Operator attestation policy: data loaded from a TOML file, judged by ``check()``.

The policy decides what *verified* evidence is acceptable: TCB statuses and
advisories, the DEBUG attribute, the other TD fields (:mod:`.td_policy`), which
measurement profiles (MRTD + RTMR0-2, and RTMR3 when a profile pins it) may run, the
GPUs each profile must bring, and the published workload manifests (``[[manifests]]``,
checked against RTMR3 through the event log, :mod:`.workload_check`). ``check()`` and
``check_td()`` return violations and fail closed: a missing input is a violation,
never a skip. The file format is documented in ``default_policy.toml`` and
``docs/attestation.md``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from chutes_subnet.errors import PolicyFileError

from .manifest import ManifestError, WorkloadManifest
from .quote import Measurements, TdReport
from .reasons import Reason, ReasonCode
from .simulated_tee import SIMULATED_PROFILE_NAME, simulated_measurements, simulated_td_fields
from .td_policy import TdPolicy
from .workload_check import StaticManifestSource

__all__ = ["TCB_STATUSES", "EvidenceFacts", "MeasurementProfile", "Policy",
           "measure_simulated_profile"]

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
)
_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
_TD_KEYS = ("mrseam", "attributes", "xfam", "mrconfigid", "mrowner", "mrownerconfig")


@dataclass(frozen=True)
class MeasurementProfile:
    """One allowlisted software stack and the GPUs it must run with."""

    name: str
    measurements: Measurements
    gpu_model: str | None = None
    gpu_count: int = 0
    #: False: RTMR3 is not compared here; the workload event log accounts for it
    pin_rtmr3: bool = True

    def matches(self, measurements: Measurements) -> bool:
        """MRTD and RTMR0-2 equal, and RTMR3 too when pinned."""
        m = self.measurements
        same = (m.mrtd, m.rtmr0, m.rtmr1, m.rtmr2) == (
            measurements.mrtd, measurements.rtmr0, measurements.rtmr1, measurements.rtmr2)
        return same and (not self.pin_rtmr3 or m.rtmr3 == measurements.rtmr3)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasurementProfile:
        """Build from a policy-file table; raises ``PolicyFileError``."""
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyFileError("every profile needs a non-empty name")
        regs: list[bytes] = []
        pin_rtmr3 = "rtmr3" in d
        for reg in _REGISTERS:
            if reg == "rtmr3" and not pin_rtmr3:
                regs.append(bytes(48))
                continue
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
        return cls(name, Measurements(*regs), model if count else None, count, pin_rtmr3)


def measure_simulated_profile(*, gpu_model: str = "H100", gpu_count: int = 8) -> MeasurementProfile:
    """The ``simulated-dev`` profile that :meth:`Policy.development` allowlists
    (:mod:`.simulated_tee`).

    RTMR3 is not pinned: the simulated TD extends it with the workload event."""
    return MeasurementProfile(SIMULATED_PROFILE_NAME, simulated_measurements(),
                              gpu_model if gpu_count else None, gpu_count, pin_rtmr3=False)


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
    td: TdPolicy = field(default_factory=TdPolicy)
    #: published workload manifests (the chute registry replaces this source later)
    manifests: tuple[WorkloadManifest, ...] = field(default=())
    #: False only in development: evidence without a workload event passes with a note
    workload_required: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, td_defaults: TdPolicy | None = None) -> Policy:
        """Build from the parsed TOML document; raises ``PolicyFileError``.

        ``[td]`` keys the document leaves out take ``td_defaults`` (the packaged
        defaults when loading an operator's file).
        """
        if d.get("version") != 1:
            raise PolicyFileError("policy file must declare version = 1")
        unknown = set(d) - {"version", "tcb", "td", "profiles", "workload", "manifests"}
        if unknown:
            raise PolicyFileError(f"unknown policy sections {sorted(unknown)}")
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
        unknown = set(td) - {"dangerous_allow_debug", "min_tee_tcb_svn", *_TD_KEYS}
        if unknown:
            raise PolicyFileError(f"td: unknown keys {sorted(unknown)}")
        workload = d.get("workload", {})
        required = workload.get("required", True) if isinstance(workload, dict) else None
        if not isinstance(required, bool) or set(workload) - {"required"}:
            raise PolicyFileError("[workload] takes only required = true|false")
        if not required and any(not p.pin_rtmr3 for p in profiles):
            raise PolicyFileError("a profile without rtmr3 needs [workload] required = true "
                                  "(RTMR3 would be checked by nothing)")
        raw_manifests = d.get("manifests", [])
        if not isinstance(raw_manifests, list):
            raise PolicyFileError("manifests must be an array of tables ([[manifests]])")
        try:
            manifests = tuple(WorkloadManifest.from_dict(m) for m in raw_manifests)
        except ManifestError as exc:
            raise PolicyFileError(f"[[manifests]]: {exc}") from exc
        return cls(frozenset(statuses), frozenset(advisories), allow_debug, profiles,
                   TdPolicy.from_dict(td, td_defaults), manifests, required)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read an operator's TOML policy file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyFileError(f"cannot read policy file {path}: {exc}") from exc
        return cls.from_dict(data, td_defaults=cls.default().td)

    @classmethod
    def default(cls) -> Policy:
        """Production defaults from the packaged ``default_policy.toml``."""
        text = resources.files(__package__).joinpath("default_policy.toml").read_text("utf-8")
        return cls.from_dict(tomllib.loads(text))

    @classmethod
    def development(cls, *, gpu_model: str = "H100", gpu_count: int = 8) -> Policy:
        """Defaults plus the simulated TD (pair with a dev-mode verifier): the
        ``simulated-dev`` profile, its TD field values, and workloads that need not be
        published (a measured one is still replayed and checked)."""
        return replace(cls.default().with_simulated(gpu_model=gpu_model, gpu_count=gpu_count),
                       workload_required=False)

    def with_simulated(self, *, gpu_model: str = "H100", gpu_count: int = 8) -> Policy:
        """A copy that also accepts the simulated TD's profile and TD field values."""
        sim = measure_simulated_profile(gpu_model=gpu_model, gpu_count=gpu_count)
        return replace(self, profiles=(*self.profiles, sim),
                       td=self.td.accepting(**simulated_td_fields()))

    def with_profiles(self, *profiles: MeasurementProfile) -> Policy:
        """A copy with extra allowlisted profiles."""
        return replace(self, profiles=(*self.profiles, *profiles))

    def with_manifests(self, *manifests: WorkloadManifest) -> Policy:
        """A copy with extra published workload manifests."""
        return replace(self, manifests=(*self.manifests, *manifests))

    def manifest_source(self) -> StaticManifestSource:
        """The published manifests as the verifier's :class:`ManifestSource`."""
        return StaticManifestSource(self.manifests)

    def match_profile(self, measurements: Measurements | None) -> MeasurementProfile | None:
        """The first profile matching ``measurements`` (:meth:`MeasurementProfile.matches`)."""
        if measurements is None:
            return None
        for profile in self.profiles:
            if profile.matches(measurements):
                return profile
        return None

    def check_td(self, report: TdReport) -> list[Reason]:
        """Violations of the ``[td]`` field rules (:mod:`.td_policy`) by a TD report."""
        return self.td.check(report, allow_debug=self.dangerous_allow_debug)

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
