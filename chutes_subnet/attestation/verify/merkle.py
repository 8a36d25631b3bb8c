"""``weights_digest`` and ``tokenizer_digest``: SHA-256 Merkle roots over model files.

Leaves, one per file, ordered by the UTF-8 bytes of the relative POSIX path::

    leaf = SHA256(0x00 || u32be(len(path)) || path || u64be(size) || SHA256(content))

Interior nodes follow RFC 6962's tree shape (split at the largest power of two below
the leaf count)::

    node = SHA256(0x01 || left || right)

The digest is ``"sha256:" + hex(root)``. The domain bytes keep a leaf from posing as
a node; the path and size in each leaf make renaming, moving or truncating a file
change the root. A directory walk (:func:`directory_leaves`) takes every regular file
(file symlinks are followed, as in a Hugging Face snapshot, and must end in a regular
file; directory symlinks are not entered), skips any path with a component that
starts with ``.`` (caches, lock files, ``.git``) and refuses an empty tree. In-memory
tensors use the same leaves with the parameter name as the path
(:func:`merkle_digest` over ``(name, bytes)``).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable
from pathlib import Path

from chutes_subnet.errors import AttestationError

__all__ = [
    "TOKENIZER_FILES",
    "Leaf",
    "directory_digest",
    "directory_leaves",
    "file_leaf",
    "leaf_hash",
    "merkle_digest",
    "merkle_root",
    "tokenizer_digest",
]

_CHUNK = 1 << 20
MAX_FILES = 100_000
#: Files that define a Hugging Face tokenizer and chat template (those present count).
TOKENIZER_FILES = (
    "added_tokens.json", "chat_template.jinja", "chat_template.json", "merges.txt",
    "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
    "vocab.json", "vocab.txt",
)

Leaf = tuple[str, int, bytes]  #: (relative path, size in bytes, SHA-256 of the content)


def leaf_hash(path: str, size: int, content_sha256: bytes) -> bytes:
    """The leaf hash of one file (see module doc)."""
    name = path.encode("utf-8")
    return hashlib.sha256(b"\x00" + struct.pack(">I", len(name)) + name
                          + struct.pack(">Q", size) + content_sha256).digest()


def _root(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    split = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _root(hashes[:split]) + _root(hashes[split:])).digest()


def merkle_root(leaves: Iterable[Leaf]) -> bytes:
    """Root over leaves (sorted by path here; duplicate paths and no leaves refused)."""
    ordered = sorted(leaves, key=lambda leaf: leaf[0].encode("utf-8"))
    if not ordered:
        raise AttestationError("a Merkle digest needs at least one file")
    paths = [leaf[0] for leaf in ordered]
    if len(set(paths)) != len(paths):
        raise AttestationError("duplicate path in a Merkle digest")
    return _root([leaf_hash(*leaf) for leaf in ordered])


def merkle_digest(items: Iterable[tuple[str, bytes]]) -> str:
    """``sha256:<hex>`` over in-memory ``(path, content)`` pairs (e.g. tensors)."""
    return "sha256:" + merkle_root(
        (p, len(data), hashlib.sha256(data).digest()) for p, data in items).hex()


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
