"""What a remote training job installs: a wheel of the running anytune and its pinned dependencies.

Shared by every provider that runs anytune's own trainer on someone else's machine (Hugging Face
Jobs, a Kubernetes pod): providers may not import each other, so the pieces live here, below them.
All of it is pure given the installed files and metadata; nothing here imports torch.

How a job gets the trainer, and why this way: anytune need not be on PyPI, and a user's local
changes should run remotely as they run locally, so the job installs a wheel of the *running*
anytune (:func:`build_wheel`). The pins are derived, not written down: each dependency of
``anytune[local]`` at the version the submitting environment has installed (:func:`local_pins`),
so a job runs the transformers, peft, torch... a local run would; a package not installed here keeps
the extra's declared range. A provider's ``requirements`` setting replaces any pin by name
(:func:`job_requirements`).

The wheel is pure Python: the installed files, zipped deterministically, with the installed
distribution's metadata (its ``local`` extra pulls torch, transformers, peft, accelerate,
bitsandbytes). Every subpackage is walked, so providers' packages and ``local_backend`` ship whole.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from anytune.errors import ConfigError

__all__ = [
    "JOB_EXTRA",
    "build_wheel",
    "derive_pins",
    "extra_requirements",
    "installed_pins",
    "job_requirements",
    "local_pins",
    "package_files",
    "requirement_name",
]

#: The extra whose dependencies the training stage pins (a job installs ``anytune[local]``).
JOB_EXTRA = "local"


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


#: ``extra == "local"`` in a ``Requires-Dist`` marker (core metadata writes the extra's name so).
_EXTRA_CLAUSE = re.compile(r"""\bextra\s*==\s*["']([A-Za-z0-9._-]+)["']""")


def extra_requirements(requires_dist: Sequence[str], extra: str) -> list[str]:
    """The requirements an extra adds, from a distribution's ``Requires-Dist`` lines (pure).

    ``bitsandbytes>=0.43; platform_system != "Darwin" and extra == "local"`` gives
    ``bitsandbytes>=0.43; platform_system != "Darwin"``: the extra's own clause goes, the rest of the
    marker stays (uv evaluates it where the job runs). Another extra's requirements and references to
    the distribution itself (``anytune[...]``) are left out.
    """
    out: list[str] = []
    for line in requires_dist:
        body, _, marker = line.partition(";")
        if extra not in _EXTRA_CLAUSE.findall(marker) or requirement_name(body) == "anytune":
            continue
        rest = _EXTRA_CLAUSE.sub("", marker).strip()
        rest = re.sub(r"^(and\s+)+|(\s+and)+$", "", rest).strip()
        out.append(body.strip() + (f"; {rest}" if rest else ""))
    return out


_DEV_BUILD = re.compile(r"\.?dev\d*$", re.I)


def derive_pins(declared: Sequence[str], installed: Mapping[str, str]) -> list[str]:
    """Each declared requirement pinned to the installed version, else left as declared (pure).

    ``installed`` maps normalised names (``huggingface-hub``) to versions. A local version label is
    dropped (``2.13.0+cpu`` -> ``torch==2.13.0``): the submitter's CPU-only build says nothing about
    the job's hardware, and the job's index has the CUDA build of the same release. A marker stays.
    A development build (``4.50.0.dev0``, installed from git) is on no index: its declared range
    stays.

    >>> derive_pins(["torch>=2.1", "peft>=0.12"], {"torch": "2.13.0+cpu"})
    ['torch==2.13.0', 'peft>=0.12']
    """
    pins: list[str] = []
    for requirement in declared:
        body, sep, marker = requirement.partition(";")
        version = installed.get(requirement_name(body))
        if version is None or _DEV_BUILD.search(version.split("+", 1)[0]):
            pins.append(requirement)
            continue
        shown = re.split(r"[\s<>=!~\[@(]", body.strip(), maxsplit=1)[0]
        pins.append(f"{shown}=={version.split('+', 1)[0]}" + (f"; {marker.strip()}" if sep else ""))
    return pins


def installed_pins(extra: str) -> list[str]:
    """``extra``'s requirements pinned to this environment's versions (its declared ranges where a
    package is not installed here)."""
    from importlib import metadata

    try:
        requires = metadata.requires("anytune") or []
    except metadata.PackageNotFoundError:  # not installed as a distribution: the wheel step says so
        return []
    declared = extra_requirements(requires, extra)
    installed: dict[str, str] = {}
    for requirement in declared:
        name = requirement_name(requirement)
        with contextlib.suppress(metadata.PackageNotFoundError):
            installed[name] = metadata.version(name)
    return derive_pins(declared, installed)


@functools.lru_cache(maxsize=1)
def local_pins() -> tuple[str, ...]:
    """What the training stage pins: ``anytune[local]``'s dependencies at this environment's
    versions, so the job runs the library versions the submitter runs (cached: read once)."""
    return tuple(installed_pins(JOB_EXTRA))


def job_requirements(overrides: Sequence[str] = (), *, pins: Sequence[str] | None = None) -> list[str]:
    """The pinned requirements of the training stage; ``overrides`` replace pins of the same name.

    Args:
        overrides: the ``requirements`` setting: replaces a pin by name, or adds a requirement.
        pins: the pins to start from (default :func:`local_pins`, derived from this environment).
    """
    given = {requirement_name(r): r for r in overrides}
    base = local_pins() if pins is None else pins
    pinned = [given.pop(requirement_name(r), r) for r in base]
    return pinned + list(given.values())


# -- the wheel ------------------------------------------------------------------------------------

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
            "a remote job installs a wheel built from its metadata"
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
