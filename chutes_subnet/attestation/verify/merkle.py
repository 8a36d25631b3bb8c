"""``weights_digest`` and ``tokenizer_digest``: SHA-256 Merkle roots over model files.

Leaves, one per file, ordered by the UTF-8 bytes of the relative POSIX path::

    leaf = SHA256(0x00 || u32be(len(path)) || path || u64be(size) || SHA256(content))

Interior nodes follow RFC 6962's tree shape (split at the largest power of two below
the leaf count)::

    node = SHA256(0x01 || left || right)

The digest is ``"sha256:" + hex(root)``. The domain bytes keep a leaf from posing as
a node; the path and size in each leaf make renaming, moving or truncating a file
change the root. In-memory tensors use the same leaves with the parameter name as the
path (:func:`merkle_digest` over ``(name, bytes)``). This module is pure; the walk
over a model directory on disk is :mod:`chutes_subnet.attestation.model_files`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from chutes_subnet.errors import AttestationError

__all__ = [
    "TOKENIZER_FILES",
    "Leaf",
    "leaf_hash",
    "merkle_digest",
    "merkle_root",
    ]

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
