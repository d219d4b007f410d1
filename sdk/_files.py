"""File facts every adapter needs: size and digests, read in chunks so memory stays flat."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["FileDigest", "atomic_write", "file_digest", "file_digests", "new_file_mode"]


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


def _umask() -> int:
    """The process umask. Linux shows it in /proc; elsewhere it can only be read by setting it,
    which is set straight back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(replacing: str | os.PathLike[str] | None = None) -> int:
    """The permissions a file written through a temporary file should end with: those of the file
    it replaces, else what ``open()`` would give a new one (0o666 less the umask, 0o644 typically);
    ``mkstemp``'s 0o600 is for the temporary file only."""
    if replacing is not None:
        try:
            return stat.S_IMODE(os.stat(replacing).st_mode)
        except OSError:
            pass
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(
    dst: str | os.PathLike[str], *, prefix: str = ".anytune-", suffix: str = ".tmp"
) -> Iterator[IO[bytes]]:
    """A binary file that becomes ``dst`` only if the ``with`` block ends without an exception.

    The data goes to a temporary file next to ``dst``, is flushed to disk, gets the permissions
    :func:`new_file_mode` gives, and is renamed over ``dst``: a failure (an exception of the block, a
    full disk) never leaves a partial or clobbered ``dst``, nor the temporary file. An ``OSError``
    that names no file (a failed write) is raised again naming ``dst``.
    """
    dst_name = os.fspath(dst)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=os.path.dirname(os.path.abspath(dst_name)))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0o600; the result is an ordinary data file, readable as usual.
        os.chmod(tmp, new_file_mode(dst_name))
        os.replace(tmp, dst_name)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, dst_name) from exc
        raise
