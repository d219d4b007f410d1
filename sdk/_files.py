"""File facts every adapter needs: size and digests, read in chunks so memory stays flat."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FileDigest", "file_digest", "file_digests"]


@dataclass(frozen=True)
class FileDigest:
    """Size and digests of one file: sha256 is the reuse key, md5 what some upload APIs check."""

    size: int
    sha256: str
    md5: str


def _read(path: Path, chunk: int, *hashes: Any) -> int:
    """Feed every hash with the file's bytes in one streaming pass; return its size."""
    size = 0
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            size += len(block)
            for h in hashes:
                h.update(block)
    return size


def file_digests(path: Path, chunk: int = 1 << 20) -> FileDigest:
    """Size, sha256 and md5 of ``path`` in one streaming pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = _read(path, chunk, sha, md5)
    return FileDigest(size, sha.hexdigest(), md5.hexdigest())


def file_digest(path: Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """Size and sha256 of ``path``."""
    sha = hashlib.sha256()
    return _read(path, chunk, sha), sha.hexdigest()
