"""The instance's workload manifest, computed inside the TD, and its RTMR3 measurement.

At start, after the backend has loaded its model and before the E2EE key exists, the
miner builds the manifest of what it serves and has the evidence provider extend RTMR3
with it (:meth:`~chutes_subnet.attestation.providers.evidence_provider.HardwareProvider.measure_workload`):

* embedded model: every field is derived here; ``weights_digest`` is the Merkle root
  over the loaded parameters (name -> raw bytes), so it is computed from the weights
  in memory, not read from a claim;
* upstream engine: the chute owner's published manifest (``--workload.manifest``);
  with ``--workload.model_dir`` the miner recomputes ``weights_digest`` and
  ``tokenizer_digest`` over the engine's model directory and refuses to start when
  they differ from the manifest.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from chutes_subnet import __version__
from chutes_subnet.attestation.model_files import directory_digest, tokenizer_digest
from chutes_subnet.attestation.verify.manifest import WorkloadManifest, load_manifest
from chutes_subnet.attestation.verify.merkle import merkle_digest
from chutes_subnet.errors import AttestationError

__all__ = ["EMBEDDED_IMAGE_DIGEST", "embedded_manifest", "instance_manifest", "measure_workload"]

log = logging.getLogger("chutes_subnet.miner")

#: The embedded model ships inside the Python package, not an OCI image of its own.
EMBEDDED_IMAGE_DIGEST = "sha256:" + "0" * 64
#: What defines the embedded tokenizer: raw UTF-8 bytes, no merges, the chat rendering
#: of :func:`chutes_subnet.inference.tokenizer.render_chat`. Bump with either.
_EMBEDDED_TOKENIZER = b"chutes-subnet/byte-level-tokenizer/v1: utf-8 bytes 0-255; render_chat v1"


def _weights_digest(model: Any) -> str:
    from chutes_subnet.inference.model import tensor_bytes

    items = []
    for name, param in model.named_parameters():
        items.append((f"{name}|{param.dtype}|{tuple(param.shape)}", tensor_bytes(param)))
    return merkle_digest(items)


def embedded_manifest(backend: Any, chute_id: str) -> WorkloadManifest:
    """The manifest of an :class:`~chutes_subnet.inference.embedded.EmbeddedBackend`."""
    config = backend.config
    return WorkloadManifest(
        chute_id=chute_id, model_id=backend.model_id, model_revision=f"seed-{backend.seed}",
        weights_digest=_weights_digest(backend._model),
        tokenizer_digest=merkle_digest([("tokenizer", _EMBEDDED_TOKENIZER)]),
        engine="embedded", engine_version=__version__, image_digest=EMBEDDED_IMAGE_DIGEST,
        dtype=config.dtype, quantization="none", max_context=config.max_context)


def instance_manifest(config: Any, backend: Any) -> WorkloadManifest | None:
    """The manifest this instance serves, or None when it cannot be established.

    Raises ``AttestationError`` when a given manifest does not fit this instance.
    """
    path = getattr(config, "workload_manifest", None)
    if path:
        manifest = load_manifest(path)
        if manifest.chute_id != config.chute_id or manifest.model_id != config.model_id:
            raise AttestationError(f"workload manifest {path} is for chute {manifest.chute_id} "
                                   f"/ model {manifest.model_id}, not this instance's")
        model_dir = getattr(config, "workload_model_dir", None)
        if model_dir:
            _check_model_dir(manifest, model_dir)
        return manifest
    from chutes_subnet.inference.embedded import EmbeddedBackend

    if isinstance(backend, EmbeddedBackend):
        return embedded_manifest(backend, config.chute_id)
    return None


def _check_model_dir(manifest: WorkloadManifest, model_dir: str) -> None:
    weights, tokenizer = directory_digest(model_dir), tokenizer_digest(model_dir)
    if not hmac.compare_digest(weights, manifest.weights_digest):
        raise AttestationError(f"model files under {model_dir} do not match the manifest's "
                               f"weights_digest (computed {weights})")
    if not hmac.compare_digest(tokenizer, manifest.tokenizer_digest):
        raise AttestationError(f"tokenizer files under {model_dir} do not match the manifest's "
                               f"tokenizer_digest (computed {tokenizer})")


def measure_workload(provider: Any, manifest: WorkloadManifest | None, *, simulated: bool) -> None:
    """Extend RTMR3 with ``manifest`` through ``provider`` (before the E2EE key exists).

    A real TD without a manifest refuses to start: validators would refuse it anyway.
    """
    measure = getattr(provider, "measure_workload", None)
    if manifest is None or measure is None:
        if not simulated:
            raise AttestationError("no workload manifest for this instance: pass "
                                   "--workload.manifest (and --workload.model_dir)")
        log.warning("workload not measured (simulated TEE without a manifest)")
        return
    measure(manifest)
    log.info("workload manifest %s measured into RTMR3 (chute %s, model %s)",
             manifest.sha384().hex()[:16], manifest.chute_id, manifest.model_id)
