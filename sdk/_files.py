"""File facts every adapter needs: size and digests, read in chunks so memory stays flat."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileDigest", "file_digest", "file_digests"]


@dataclass(frozen=True)
class FileDigest:
    """Size and digests of one file: sha256 is the reuse key, md5 what some upload APIs check."""

    size: int
    sha256: str
    md5: str


def file_digests(path: Path, chunk: int = 1 << 20) -> FileDigest:
    """Size, sha256 and md5 of ``path`` in one streaming pass."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            size += len(block)
            sha.update(block)
            md5.update(block)
    return FileDigest(size, sha.hexdigest(), md5.hexdigest())


def file_digest(path: Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """Size and sha256 of ``path``."""
    h = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            size += len(block)
            h.update(block)
    return size, h.hexdigest()
