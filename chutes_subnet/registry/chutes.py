"""Chutes as deployments: what an owner deploys, validated before anything is stored.

A chute is one model release served by attested instances. Its owner (an API key)
deploys a :class:`ChuteSpec`, usually from a ``chute.toml``::

    name = "acme/llama-3-8b"          # what clients call (the OpenAI "model")
    visibility = "private"            # or "public" (default)
    allow = ["k_3f2a…"]               # private: other API key ids that may use it
    image_digest = "sha256:…"         # the OCI image the engine runs from

    [manifest]                        # the workload manifest (attestation/verify/manifest.py)
    model_id = "acme/llama-3-8b"      # must equal name; chute_id may be omitted
    …

    [hardware]
    gpu_model = "H100"                # or "any"
    gpu_count = 1
    gpu_memory_gb = 80

    [prices]                          # rao per million tokens, integers >= 0
    prompt_rao_per_mtok = 100
    completion_rao_per_mtok = 400

    [scaling]
    min_instances = 1
    max_instances = 8

Identity: ``chute_id = chute_id_for_model(name)`` (uuid5), so miners that name the
model and clients that call it agree on the id. The manifest must name that chute
and that model, and carry the same image digest; it is validated with the attestation
verifier's own parser (:mod:`chutes_subnet.attestation.verify.manifest`) and kept as its
canonical JSON. Every check raises
:class:`ChuteSpecError` with one line naming the field; nothing is stored.

A stored :class:`Chute` is the current version of a spec plus its owner, version
number and whether it is retired; every change is a new version (see
:mod:`chutes_subnet.registry.chute_store`).
"""

from __future__ import annotations

import hmac
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chutes_subnet.registry.instances import RegistryError
from chutes_subnet.wire.protocol import chute_id_for_model

if TYPE_CHECKING:
    from chutes_subnet.attestation.verify.manifest import WorkloadManifest

__all__ = [
    "MAX_ALLOW",
    "MAX_SPEC_BYTES",
    "Chute",
    "ChuteChange",
    "ChuteForbidden",
    "ChuteNotFound",
    "ChuteSpec",
    "ChuteSpecError",
    "ChuteStore",
    "Hardware",
    "Prices",
    "load_chute_toml",
    "parse_chute_spec",
    "spec_from_stored",
]

MAX_SPEC_BYTES = 16 * 1024
MAX_ALLOW = 256
MAX_INSTANCES = 1024
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:+-]{0,127}")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_GPU = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,31}")
_TOP = {"name", "visibility", "allow", "image_digest", "manifest", "hardware", "prices",
        "scaling"}


class ChuteSpecError(RegistryError, ValueError):
    """A chute spec is malformed; the message names the field (one line)."""


class ChuteNotFound(RegistryError):
    """No such chute, or it is private and the caller is not allowed to see it."""


class ChuteForbidden(RegistryError):
    """The caller may see the chute but not change it (not its owner)."""


@dataclass(frozen=True)
class Hardware:
    """What one instance of the chute needs."""

    gpu_model: str = "any"
    gpu_count: int = 1
    gpu_memory_gb: int = 0


@dataclass(frozen=True)
class Prices:
    """Rao per million prompt / completion tokens."""

    prompt_rao_per_mtok: int = 0
    completion_rao_per_mtok: int = 0


@dataclass(frozen=True)
class ChuteSpec:
    """A validated deployment request (build with :func:`parse_chute_spec`)."""

    name: str
    #: the workload manifest as validated JSON (:meth:`workload_manifest` parses it)
    manifest: Mapping[str, Any]
    image_digest: str
    visibility: str = "public"
    allow: tuple[str, ...] = ()
    hardware: Hardware = field(default_factory=Hardware)
    prices: Prices = field(default_factory=Prices)
    min_instances: int = 1
    max_instances: int = 8

    @property
    def chute_id(self) -> str:
        return chute_id_for_model(self.name)

    def workload_manifest(self) -> WorkloadManifest:
        """The manifest as the attestation verifier's type (validated at deploy)."""
        from chutes_subnet.attestation.verify.manifest import WorkloadManifest

        return WorkloadManifest.from_dict(dict(self.manifest))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what is stored and served), sorted for stable comparison."""
        return {
            "name": self.name, "visibility": self.visibility, "allow": list(self.allow),
            "image_digest": self.image_digest, "manifest": dict(self.manifest),
            "hardware": asdict(self.hardware), "prices": asdict(self.prices),
            "scaling": {"min_instances": self.min_instances,
                        "max_instances": self.max_instances},
        }

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _table(data: Mapping[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ChuteSpecError(f"{name} must be a table")
    unknown = sorted(str(k)[:40] for k in value if k not in allowed)
    if unknown:
        raise ChuteSpecError(f"unknown {name} fields: {unknown}")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChuteSpecError(f"{where} must be an integer in {low}..{high}")
    return value


def _parse_manifest(raw: Any, chute_id: str, name: str, image_digest: str) -> dict[str, Any]:
    # imported here: the attestation package loads X.509 code the keyless gateway
    # process never needs until someone deploys
    from chutes_subnet.attestation.verify.manifest import ManifestError, WorkloadManifest

    if not isinstance(raw, dict):
        raise ChuteSpecError("manifest must be a table (the workload manifest)")
    data = {"version": 1, "chute_id": chute_id, **raw}
    try:
        manifest = WorkloadManifest.from_dict(data)
    except ManifestError as exc:
        raise ChuteSpecError(f"manifest: {exc}") from None
    if manifest.chute_id != chute_id:
        raise ChuteSpecError(f"manifest.chute_id must be {chute_id} (derived from name)")
    if manifest.model_id != name:
        raise ChuteSpecError("manifest.model_id must equal name")
    # hmac directly: the keyless gateway imports this module, not the attestation package
    if not hmac.compare_digest(manifest.image_digest.encode(), image_digest.encode()):
        raise ChuteSpecError("manifest.image_digest must equal image_digest")
    return json.loads(manifest.canonical_bytes())


def parse_chute_spec(data: Any) -> ChuteSpec:
    """Validate a spec (a JSON/TOML object); raises :class:`ChuteSpecError`."""
    if not isinstance(data, dict):
        raise ChuteSpecError("a chute spec must be an object")
    unknown = sorted(str(k)[:40] for k in data if k not in _TOP)
    if unknown:
        raise ChuteSpecError(f"unknown chute fields: {unknown}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ChuteSpecError("name must be 1..128 of [A-Za-z0-9._/:+-], starting alphanumeric")
    visibility = data.get("visibility", "public")
    if visibility not in ("public", "private"):
        raise ChuteSpecError('visibility must be "public" or "private"')
    allow = data.get("allow", [])
    if not isinstance(allow, list) or len(allow) > MAX_ALLOW or not all(
            isinstance(k, str) and _KEY_ID.fullmatch(k) for k in allow):
        raise ChuteSpecError(f"allow must be a list of at most {MAX_ALLOW} API key ids")
    if allow and visibility == "public":
        raise ChuteSpecError("allow is only meaningful for a private chute")
    image_digest = data.get("image_digest")
    if not isinstance(image_digest, str) or not _DIGEST.fullmatch(image_digest):
        raise ChuteSpecError('image_digest must be "sha256:" and 64 lower-case hex digits')
    chute_id = chute_id_for_model(name)
    manifest = _parse_manifest(data.get("manifest"), chute_id, name, image_digest)
    hw = _table(data, "hardware", {"gpu_model", "gpu_count", "gpu_memory_gb"})
    gpu_model = hw.get("gpu_model", "any")
    if not isinstance(gpu_model, str) or not _GPU.fullmatch(gpu_model):
        raise ChuteSpecError("hardware.gpu_model must be a short name (or \"any\")")
    hardware = Hardware(gpu_model, _int(hw.get("gpu_count", 1), "hardware.gpu_count", 0, 64),
                        _int(hw.get("gpu_memory_gb", 0), "hardware.gpu_memory_gb", 0, 4096))
    pr = _table(data, "prices", {"prompt_rao_per_mtok", "completion_rao_per_mtok"})
    prices = Prices(*(_int(pr.get(k, 0), f"prices.{k}", 0, 10**15)
                      for k in ("prompt_rao_per_mtok", "completion_rao_per_mtok")))
    sc = _table(data, "scaling", {"min_instances", "max_instances"})
    low = _int(sc.get("min_instances", 1), "scaling.min_instances", 0, MAX_INSTANCES)
    high = _int(sc.get("max_instances", 8), "scaling.max_instances", 1, MAX_INSTANCES)
    if low > high:
        raise ChuteSpecError("scaling.min_instances must not exceed scaling.max_instances")
    return ChuteSpec(name, manifest, image_digest, visibility, tuple(sorted(set(allow))),
                     hardware, prices, low, high)


def spec_from_stored(data: Mapping[str, Any]) -> ChuteSpec:
    """A spec read back from the store (validated when it was deployed)."""
    sc, hw, pr = data["scaling"], data["hardware"], data["prices"]
    return ChuteSpec(data["name"], data["manifest"], data["image_digest"], data["visibility"],
                     tuple(data["allow"]), Hardware(**hw), Prices(**pr),
                     sc["min_instances"], sc["max_instances"])


def load_chute_toml(path: str | Path) -> ChuteSpec:
    """Read and validate a ``chute.toml``; raises :class:`ChuteSpecError`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ChuteSpecError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise ChuteSpecError(f"{path} is larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ChuteSpecError(f"{path} is not valid TOML ({exc})".splitlines()[0]) from None
    return parse_chute_spec(data)


@dataclass(frozen=True)
class Chute:
    """The current version of a deployed chute."""

    spec: ChuteSpec
    owner: str  #: API key id of the deployer
    version: int
    retired: bool
    created_at: float
    updated_at: float

    @property
    def chute_id(self) -> str:
        return self.spec.chute_id

    @property
    def name(self) -> str:
        return self.spec.name

    def visible_to(self, key_id: str | None) -> bool:
        """Public, or the caller is the owner or on the allowlist."""
        return self.spec.visibility == "public" or (
            key_id is not None and (key_id == self.owner or key_id in self.spec.allow))

    def to_dict(self) -> dict[str, Any]:
        return {"chute_id": self.chute_id, "owner": self.owner, "version": self.version,
                "retired": self.retired, "created_at": self.created_at,
                "updated_at": self.updated_at, **self.spec.to_dict()}


@dataclass(frozen=True)
class ChuteChange:
    """One entry of a chute's audit history."""

    chute_id: str
    version: int
    action: str  #: "deploy", "update", "retire"
    actor: str
    at: float
    spec: dict[str, Any]


class ChuteStore(Protocol):
    """Where chutes live (SQLite or PostgreSQL through :mod:`chutes_subnet.stores`)."""

    def deploy(self, spec: ChuteSpec, actor: str) -> Chute:
        """Create, update or re-deploy ``spec`` for its owner ``actor``."""
        ...

    def retire(self, chute_id: str, actor: str) -> Chute:
        """Retire a chute (owner only); its instances stop being routed or scored."""
        ...

    def get(self, chute_id: str) -> Chute | None:
        """The current version, retired or not."""
        ...

    def all(self) -> Sequence[Chute]:
        """Every chute (retired included)."""
        ...

    def history(self, chute_id: str) -> Sequence[ChuteChange]:
        """Every change, oldest first."""
        ...
