"""The wheel of the running anytune that a job installs (pure, given the installed files).

The wheel is pure Python: the installed files, zipped deterministically, with the installed
distribution's metadata (its ``local`` extra pulls torch, transformers, peft, accelerate,
bitsandbytes). Every subpackage is walked, so providers' packages and ``local_backend`` ship whole.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

from anytune.errors import ConfigError

__all__ = ["build_wheel", "package_files"]

_WHEEL_SUFFIXES = frozenset({".py", ".pyi", ".typed", ".json", ".jsonl", ".jinja", ".txt"})
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def package_files() -> dict[str, Path]:
    """The files of the running anytune, by their path inside a wheel (``anytune/...``).

    Follows where Python imports each part from, so an editable install (``sdk/``, ``providers/``,
    ``local_backend/`` mapped into one package) and a regular one give the same wheel.
    """
    import importlib.util

    def folder(package: str) -> Path:
        # find_spec, not an import of the package: a provider must not import the job API above it.
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None, package
        return Path(spec.origin).parent

    roots = {
        "anytune": folder("anytune"),
        "anytune/providers": folder("anytune.providers"),
        "anytune/local_backend": folder("anytune.local_backend"),
    }
    files: dict[str, Path] = {}
    for prefix, root in roots.items():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if (
                path.is_file()
                and path.suffix in _WHEEL_SUFFIXES
                and not any(p == "__pycache__" or p.startswith(".") for p in rel.parts)
            ):
                files[f"{prefix}/{rel.as_posix()}"] = path
    return files


def _wheel_metadata(version: str) -> str:
    from importlib import metadata

    try:
        installed = metadata.metadata("anytune")
    except metadata.PackageNotFoundError as exc:
        raise ConfigError(
            "anytune is not installed as a distribution (pip install -e . or pip install anytune): "
            "the Hugging Face job installs a wheel built from its metadata"
        ) from exc
    lines = ["Metadata-Version: 2.1", "Name: anytune", f"Version: {version}"]
    lines += [f"Requires-Python: {v}" for v in installed.get_all("Requires-Python") or []]
    lines += [f"Provides-Extra: {e}" for e in installed.get_all("Provides-Extra") or []]
    lines += [f"Requires-Dist: {r}" for r in installed.get_all("Requires-Dist") or []]
    return "\n".join(lines) + "\n"


def build_wheel() -> tuple[str, bytes]:
    """A py3-none-any wheel of the running anytune: ``(file name, bytes)``.

    Deterministic (sorted entries, fixed timestamps and modes): the same files give the same bytes,
    hence the same sha256, so an unchanged installation is uploaded once.
    """
    from anytune._version import __version__

    version = __version__.replace("-", "_")
    dist_info = f"anytune-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in sorted(package_files().items())]
    entries.append((f"{dist_info}/METADATA", _wheel_metadata(__version__).encode()))
    entries.append(
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: anytune\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    )
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return f"anytune-{version}-py3-none-any.whl", buffer.getvalue()
