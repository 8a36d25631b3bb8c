"""NVIDIA reference integrity manifests (RIMs) and the comparison with GPU evidence.

A RIM is an ISO/IEC 19770-2 SWID tag (XML) following the TCG RIM information model:
``Meta@colloquialVersion`` names the firmware it describes (a VBIOS version such as
``96.00.5E.00.01``, or a driver version such as ``545.00``) and one ``Resource`` per
measurement index carries ``active``, ``alternatives`` and the golden SHA-384 values
``Hash0`` .. ``Hash{n-1}``. NVIDIA's verifier compares a GPU's signed SPDM
measurement blocks with the driver RIM and the VBIOS RIM of the versions the evidence
reports: every index active in one of them must equal one of its alternatives.

What this module does: parse (strict, bounded, no DTDs or entities), index RIMs by
version (:class:`RimStore`), compare (:func:`compare_rim`). What it does not do: check
the RIM's enveloped XML signature (C14N 1.1 + ECDSA-P384, chained to NVIDIA's RIM
root): RIM files are operator configuration, fetched from NVIDIA's RIM service and
pinned like the policy file. ``docs/attestation.md`` states this gap.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from chutes_subnet.errors import AttestationError

__all__ = ["MAX_RIM_BYTES", "Rim", "RimFormatError", "RimStore", "compare_rim", "parse_rim"]

MAX_RIM_BYTES = 1 << 20
_SWID = "{http://standards.iso.org/iso/19770/-2/2015/schema.xsd}"
_SHA384 = "{http://www.w3.org/2001/04/xmlenc#sha384}"
_ROOT_TAG = _SWID + "SoftwareIdentity"
_VBIOS = re.compile(r"[0-9A-F]{2}(\.[0-9A-F]{2}){4}")


class RimFormatError(AttestationError):
    """A RIM file is malformed (the message says where)."""


@dataclass(frozen=True)
class Rim:
    """One parsed RIM: which firmware, and the golden values per measurement index."""

    product: str
    version: str
    kind: str  #: "vbios" or "driver"
    #: index -> (active, accepted SHA-384 values)
    measurements: dict[int, tuple[bool, tuple[bytes, ...]]]

    def active(self) -> dict[int, tuple[bytes, ...]]:
        return {i: alts for i, (on, alts) in self.measurements.items() if on}


def _int(value: str | None, what: str) -> int:
    if value is None or not value.isdigit() or len(value) > 4:
        raise RimFormatError(f"RIM {what} must be a small non-negative integer")
    return int(value)


def parse_rim(data: bytes) -> Rim:
    """Parse one RIM document; raises :class:`RimFormatError`."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_RIM_BYTES:
        raise RimFormatError(f"a RIM is XML of at most {MAX_RIM_BYTES} bytes")
    try:  # defusedxml: DTDs, entities and external references are refused
        root = defused_fromstring(bytes(data), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise RimFormatError("RIM must not declare a DTD or entities") from exc
    except ET.ParseError as exc:
        raise RimFormatError(f"RIM is not well-formed XML: {exc}") from exc
    if root.tag != _ROOT_TAG:
        raise RimFormatError("RIM root is not a SWID SoftwareIdentity")
    meta = root.find(_SWID + "Meta")
    payload = root.find(_SWID + "Payload")
    if meta is None or payload is None:
        raise RimFormatError("RIM lacks Meta or Payload")
    version = (meta.get("colloquialVersion") or "").upper()
    product = meta.get("product") or root.get("name") or ""
    if not version or not product:
        raise RimFormatError("RIM Meta lacks colloquialVersion or product")
    measurements: dict[int, tuple[bool, tuple[bytes, ...]]] = {}
    for res in payload.findall(_SWID + "Resource"):
        if res.get("type") != "Measurement":
            continue
        index = _int(res.get("index"), "index")
        count = _int(res.get("alternatives"), "alternatives")
        active = res.get("active")
        if active not in ("True", "False") or index in measurements or not 0 < count <= 16:
            raise RimFormatError(f"RIM measurement {index} is malformed")
        alts = []
        for k in range(count):
            try:
                value = bytes.fromhex(res.get(f"{_SHA384}Hash{k}") or "")
            except ValueError:
                value = b""
            if len(value) != 48:
                raise RimFormatError(f"RIM measurement {index} Hash{k} is not SHA-384 hex")
            alts.append(value)
        measurements[index] = (active == "True", tuple(alts))
    if not measurements:
        raise RimFormatError("RIM has no measurements")
    return Rim(product, version, "vbios" if _VBIOS.fullmatch(version) else "driver",
               measurements)


class RimStore:
    """RIMs an operator provides, looked up by the versions a GPU's evidence reports."""

    def __init__(self, rims: Iterable[Rim] = ()) -> None:
        self._by: dict[tuple[str, str], Rim] = {}
        for rim in rims:
            self._by[(rim.kind, rim.version)] = rim

    @classmethod
    def from_dir(cls, path: str | Path) -> RimStore:
        """Every ``*.swidtag`` / ``*.xml`` file in ``path``; raises on a malformed one."""
        rims = []
        for file in sorted(Path(path).iterdir()):
            if file.suffix in (".swidtag", ".xml") and file.is_file():
                try:
                    rims.append(parse_rim(file.read_bytes()[: MAX_RIM_BYTES + 1]))
                except RimFormatError as exc:
                    raise RimFormatError(f"{file.name}: {exc}") from exc
        return cls(rims)

    def __len__(self) -> int:
        return len(self._by)

    def lookup(self, driver: str | None, vbios: str | None) -> tuple[Rim | None, Rim | None]:
        """``(driver RIM, VBIOS RIM)`` for these versions (None where absent)."""
        return (self._by.get(("driver", (driver or "").upper())),
                self._by.get(("vbios", (vbios or "").upper())))


def compare_rim(blocks: Iterable[tuple[int, bytes]], rims: Iterable[Rim]) -> list[int]:
    """Indices whose measured value matches no golden alternative (sorted).

    ``blocks`` are SPDM measurement blocks ``(index, DMTF measurement)``; the value
    follows the 3-byte DMTF header (type u8 | size u16). An index active in a RIM but
    missing from the evidence is a mismatch; indices no RIM activates are not judged.
    """
    measured = {index: block[3:] for index, block in blocks}
    bad: set[int] = set()
    for rim in rims:
        for index, alts in rim.active().items():
            if measured.get(index) not in alts:
                bad.add(index)
    return sorted(bad)
