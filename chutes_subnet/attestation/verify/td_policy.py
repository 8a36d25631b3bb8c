"""TD fields the policy pins besides MRTD/RTMR0-3: the ``[td]`` table of a policy file.

============================  ===========================  ==============================
field (TD report)             policy key                   reason code when violated
============================  ===========================  ==============================
MRSEAM (TDX module)           ``mrseam`` (allowlist)       ``mrseam_not_allowed``
TDATTRIBUTES (exact)          ``attributes`` (allowlist)   ``td_attributes_mismatch``
XFAM (exact)                  ``xfam`` (allowlist)         ``xfam_mismatch``
MRCONFIGID                    ``mrconfigid`` (allowlist)   ``mrconfigid_mismatch``
MROWNER                       ``mrowner`` (allowlist)      ``mrowner_mismatch``
MROWNERCONFIG                 ``mrownerconfig`` (allow.)   ``mrownerconfig_mismatch``
TEE_TCB_SVN (per component)   ``min_tee_tcb_svn``          ``tee_tcb_svn_too_low``
============================  ===========================  ==============================

Values are lower-case hex of the bytes exactly as the quote carries them (attributes
and XFAM are the 8 little-endian bytes, e.g. ``0000001000000000`` = SEPT_VE_DISABLE
only). A key absent from an operator's file takes the packaged default; an empty list
accepts nothing (fails closed). TEE_TCB_SVN passes when every byte is at least the
minimum's byte at the same position (each byte is one component's SVN). With
``dangerous_allow_debug`` the DEBUG bit is ignored in the attributes comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chutes_subnet.errors import PolicyFileError

from .quote import TD_ATTR_DEBUG, TdReport
from .reasons import Reason, ReasonCode

__all__ = ["TD_FIELDS", "TdPolicy"]

#: policy key -> (TdReport attribute, byte length, reason code, human name)
TD_FIELDS: dict[str, tuple[str, int, ReasonCode, str]] = {
    "mrseam": ("mr_seam", 48, ReasonCode.MRSEAM_NOT_ALLOWED, "MRSEAM (TDX module)"),
    "attributes": ("td_attributes", 8, ReasonCode.TD_ATTRIBUTES_MISMATCH, "TD attributes"),
    "xfam": ("xfam", 8, ReasonCode.XFAM_MISMATCH, "XFAM"),
    "mrconfigid": ("mr_config_id", 48, ReasonCode.MRCONFIGID_MISMATCH, "MRCONFIGID"),
    "mrowner": ("mr_owner", 48, ReasonCode.MROWNER_MISMATCH, "MROWNER"),
    "mrownerconfig": ("mr_owner_config", 48, ReasonCode.MROWNERCONFIG_MISMATCH, "MROWNERCONFIG"),
}
_DEBUG_MASK = (~TD_ATTR_DEBUG & (2**64 - 1)).to_bytes(8, "little")


def _hex(value: object, key: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise PolicyFileError(f"td.{key}: every value must be {2 * size} hex characters")
    return raw


def _masked(value: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, _DEBUG_MASK, strict=True))


@dataclass(frozen=True)
class TdPolicy:
    """Accepted values per TD field (see module doc). Empty sets accept nothing."""

    mrseam: frozenset[bytes] = frozenset()
    attributes: frozenset[bytes] = frozenset()
    xfam: frozenset[bytes] = frozenset()
    mrconfigid: frozenset[bytes] = frozenset()
    mrowner: frozenset[bytes] = frozenset()
    mrownerconfig: frozenset[bytes] = frozenset()
    min_tee_tcb_svn: bytes = b"\xff" * 16

    @classmethod
    def from_dict(cls, td: dict[str, Any], defaults: TdPolicy | None = None) -> TdPolicy:
        """Build from the ``[td]`` table; absent keys come from ``defaults``."""
        base = defaults or cls()
        values: dict[str, Any] = {}
        for key, (_attr, size, _code, _name) in TD_FIELDS.items():
            if key not in td:
                values[key] = getattr(base, key)
                continue
            items = td[key]
            if not isinstance(items, list):
                raise PolicyFileError(f"td.{key} must be a list of hex strings")
            values[key] = frozenset(_hex(v, key, size) for v in items)
        svn = td.get("min_tee_tcb_svn")
        values["min_tee_tcb_svn"] = base.min_tee_tcb_svn if svn is None \
            else _hex(svn, "min_tee_tcb_svn", 16)
        return cls(**values)

    def accepting(self, **extra: bytes) -> TdPolicy:
        """A copy that also accepts one more value per named key (development profiles);
        ``min_tee_tcb_svn`` is lowered component-wise to admit the given SVN."""
        current: dict[str, Any] = {k: getattr(self, k) for k in TD_FIELDS}
        for key, value in extra.items():
            if key in TD_FIELDS:
                current[key] = current[key] | {value}
            elif key != "min_tee_tcb_svn":
                raise ValueError(f"unknown TD policy key {key}")
        svn = extra.get("min_tee_tcb_svn", self.min_tee_tcb_svn)
        current["min_tee_tcb_svn"] = bytes(
            min(a, b) for a, b in zip(self.min_tee_tcb_svn, svn, strict=True))
        return TdPolicy(**current)

    def check(self, report: TdReport, *, allow_debug: bool = False) -> list[Reason]:
        """Violations of the TD field rules by a (verified) TD report."""
        out: list[Reason] = []
        for key, (attr, _size, code, name) in TD_FIELDS.items():
            value: bytes = getattr(report, attr)
            accepted: frozenset[bytes] = getattr(self, key)
            if key == "attributes" and allow_debug:
                value, accepted = _masked(value), frozenset(_masked(a) for a in accepted)
            if value not in accepted:
                out.append(Reason.of(code, f"{name} {value.hex()[:16]}... is not an accepted value"
                                     if len(value) > 8 else f"{name} {value.hex()} is not accepted"))
        svn = report.tee_tcb_svn
        if len(svn) != 16 or any(a < b for a, b in zip(svn, self.min_tee_tcb_svn, strict=True)):
            out.append(Reason.of(ReasonCode.TEE_TCB_SVN_TOO_LOW,
                                 f"TEE_TCB_SVN {svn.hex()} is below the minimum "
                                 f"{self.min_tee_tcb_svn.hex()}"))
        return out
