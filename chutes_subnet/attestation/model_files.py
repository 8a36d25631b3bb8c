"""Model directories on disk into the Merkle digests of :mod:`.verify.merkle`.

``weights_digest`` covers every regular file under a model directory; file symlinks
are followed (as in a Hugging Face snapshot) and must end in a regular file, directory
symlinks are not entered, any path with a component starting with ``.`` (caches, lock
files, ``.git``) is skipped, and an empty tree is refused. ``tokenizer_digest`` covers
the top-level :data:`~.verify.merkle.TOKENIZER_FILES` present. Used by the miner (its
workload manifest), the validator (its reference models) and ``chutes-subnet measure``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from chutes_subnet.attestation.verify.merkle import TOKENIZER_FILES, Leaf, merkle_root
from chutes_subnet.errors import AttestationError

__all__ = ["MAX_FILES", "directory_digest", "directory_leaves", "file_leaf", "tokenizer_digest"]

_CHUNK = 1 << 20
#: Most files a model directory may hold.
MAX_FILES = 100_000


def file_leaf(root: Path, path: Path) -> Leaf:
    """Stream one file into its leaf (relative to ``root``)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return path.relative_to(root).as_posix(), size, digest.digest()


def _files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if not path.is_file():  # follows a symlink; dangling links and devices refused
                raise AttestationError(f"{path} is not a regular file")
            out.append(path)
            if len(out) > MAX_FILES:
                raise AttestationError(f"more than {MAX_FILES} files under {root}")
    return out


def directory_leaves(root: str | Path, names: Iterable[str] | None = None) -> list[Leaf]:
    """Leaves of every file under ``root`` (or only top-level files in ``names``)."""
    base = Path(root)
    if not base.is_dir():
        raise AttestationError(f"model directory {base} does not exist")
    if names is None:
        files = _files(base)
    else:
        files = [base / n for n in names if (base / n).is_file()]
    try:
        return [file_leaf(base, p) for p in files]
    except OSError as exc:
        raise AttestationError(f"cannot read model files under {base}: {exc.strerror}") from exc


def directory_digest(root: str | Path) -> str:
    """``weights_digest`` of a model directory: ``sha256:<hex>`` over every file."""
    return "sha256:" + merkle_root(directory_leaves(root)).hex()


def tokenizer_digest(root: str | Path) -> str:
    """``tokenizer_digest`` of a model directory: the :data:`TOKENIZER_FILES` present."""
    return "sha256:" + merkle_root(directory_leaves(root, TOKENIZER_FILES)).hex()
