"""Every package anytune's code imports is declared in pyproject, where the code that imports it is.

The source is walked with ``ast``; each import's top-level module is mapped to its distribution with
``importlib.metadata.packages_distributions()``. Where an import may go:

* the core (``sdk/``): at module level, a core dependency only (``pip install anytune`` must import
  it); inside a function (an optional feature behind a ``MissingDependencyError``), a core
  dependency or one of an extra;
* each provider package, ``local_backend/`` and ``anytune.testing``: a core dependency or one of the
  extras that area serves (table below);
* a core module that runs only for the users of some extras (:data:`SERVED`: the base-model check
  of the hf and local providers, Hub datasets): whatever it imports, each of those extras declares
  (an import some other extra happens to declare is not enough);
* imports under ``if TYPE_CHECKING:`` never run, and are not counted.

So importing a package no extra declares (one another package happens to bring along today) fails here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from anytune._compat import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

#: Source area (a path prefix relative to the repository, longest match wins) -> the extras its
#: imports may come from, besides the core. None: the core itself (module-level imports core only).
AREAS: dict[str, tuple[str, ...] | None] = {
    "sdk/": None,
    "sdk/testing/": ("testing",),
    "sdk/_serve/": ("serve",),
    "sdk/_serve/chat.py": ("serve", "local"),  # chat loads local weights (transformers, torch)
    "sdk/_serve/vllm_engine.py": ("serve", "local", "vllm"),  # --engine vllm
    "providers/": (),  # the registry, the fake provider: core only
    "providers/openai/": ("openai", "azure"),  # also azure-openai (Entra ID through azure-identity)
    "providers/azureml/": ("azure",),
    "providers/huggingface/": ("hf",),
    "providers/local.py": ("local",),
    "providers/kubernetes/": ("kubernetes",),
    "local_backend/": ("local",),
    "local_backend/train.py": ("local", "deepspeed"),  # zero2/zero3 only
    "local_backend/zero.py": ("local", "deepspeed"),  # the config checked by DeepSpeed's classes
    "local_backend/evaluate.py": ("local", "lm-eval"),  # lm-eval only for --lm-eval-tasks
    "local_backend/k8s_job.py": ("local", "kubernetes"),  # a pod reads and writes its storage through fsspec
    "local_backend/export/onnx.py": ("onnx",),
    "local_backend/export/gguf.py": ("gguf",),
}

#: Core modules (paths relative to the repository) that only the users of these extras run: each
#: of the extras must declare every package the module imports, lazily or not.
SERVED: dict[str, tuple[str, ...]] = {
    "sdk/_base_model.py": ("hf", "local"),  # the base-model check of the huggingface and local providers
    "sdk/_data/hub.py": ("data",),  # Hub dataset ids as a data source
    "sdk/_data/sources.py": ("data",),  # Parquet files and folders saved by `datasets`
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[\s<>=!~;\[@(]", requirement.strip(), maxsplit=1)[0])


def declared(project: Mapping[str, object]) -> tuple[set[str], dict[str, set[str]]]:
    """Core dependency names, and each extra's (``anytune[a,b]`` references expanded)."""
    core = {requirement_name(r) for r in project["dependencies"]}  # type: ignore[attr-defined]
    raw: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    extras: dict[str, set[str]] = {}

    def expand(extra: str) -> set[str]:
        if extra not in extras:
            extras[extra] = set()
            for requirement in raw[extra]:
                if requirement_name(requirement) == "anytune":
                    inner = requirement.split("[", 1)[1].split("]", 1)[0]
                    for other in inner.split(","):
                        extras[extra] |= expand(other.strip())
                else:
                    extras[extra].add(requirement_name(requirement))
        return extras[extra]

    for extra in raw:
        expand(extra)
    return core, extras


@dataclass(frozen=True)
class Import:
    file: str
    line: int
    module: str
    lazy: bool  # inside a function


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, file: str) -> Iterator[Import]:
    """Absolute imports that run (not under ``if TYPE_CHECKING:``), and whether each is lazy."""

    def walk(node: ast.AST, lazy: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for rest in child.orelse:
                    yield from walk(rest, lazy)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(file, child.lineno, alias.name, lazy)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield Import(file, child.lineno, child.module, lazy)
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, inner)

    yield from walk(ast.parse(source, filename=file), False)


def distribution_of(module: str, table: Mapping[str, list[str]]) -> str | None:
    """The distribution providing ``module``; None for the standard library and anytune itself.

    A namespace package (``azure``) is shared by many distributions: the one whose files hold the
    imported subpackage (``azure/identity/``) is it. A module of a package not installed here (a
    backport for another Python) is taken to be named like its distribution.
    """
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "anytune":
        return None
    candidates = table.get(top, [])
    if len(candidates) > 1:
        parts = module.split(".")
        for depth in range(len(parts), 1, -1):
            folder = "/".join(parts[:depth]) + "/"
            owners = {
                d
                for d in candidates
                if any(str(f).startswith(folder) for f in (importlib.metadata.distribution(d).files or []))
            }
            if len(owners) == 1:
                return normalise(owners.pop())
    return normalise(candidates[0]) if candidates else normalise(top)


def area_of(file: str) -> str:
    return max((a for a in AREAS if file.startswith(a)), key=len)


def undeclared(files: Mapping[str, str], project: Mapping[str, object], table: Mapping[str, list[str]]) -> list[str]:
    """One line per import a user's install might lack: file, line, module, distribution, where to declare it."""
    core, extras = declared(project)
    every_extra = set().union(*extras.values())
    problems = []
    for file, source in sorted(files.items()):
        area = AREAS[area_of(file)]
        for imp in imports_of(source, file):
            dist = distribution_of(imp.module, table)
            if dist is None or dist in core:
                continue
            if area is None:
                allowed, where = (every_extra, "an extra") if imp.lazy else (set(), "the core dependencies")
            else:
                allowed = set().union(*(extras.get(e, set()) for e in area))
                where = " or ".join(f"anytune[{e}]" for e in area) or "the core dependencies"
            kind = "lazy import" if imp.lazy else "import"
            if dist not in allowed:
                problems.append(f"{imp.file}:{imp.line}: {kind} of {imp.module} needs {dist}, not declared in {where}")
                continue
            for extra in SERVED.get(file, ()):
                if dist not in extras.get(extra, set()):
                    problems.append(
                        f"{imp.file}:{imp.line}: {kind} of {imp.module} needs {dist}, not declared in anytune[{extra}]"
                    )
    return problems


def _sources() -> dict[str, str]:
    found = {}
    for folder in ("sdk", "providers", "local_backend"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return found


@pytest.fixture(scope="module")
def table() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def test_every_imported_package_is_declared_where_it_is_used(table: Mapping[str, list[str]]) -> None:
    assert undeclared(_sources(), PYPROJECT["project"], table) == []


@pytest.mark.parametrize(
    ("file", "source", "message"),
    [
        # jsonschema is installed here (a dev tool), but no extra of the local backend declares it.
        ("local_backend/x.py", "import jsonschema\n", "x.py:1: import of jsonschema needs jsonschema"),
        # Core code may not import an extra's package at module level...
        ("sdk/_x.py", "import torch\n", "sdk/_x.py:1: import of torch needs torch, not declared in the core"),
        # ... nor a provider another provider's extra declares.
        (
            "providers/huggingface/x.py",
            "from azure.identity import DefaultAzureCredential\n",
            "needs azure-identity, not declared in anytune[hf]",
        ),
        ("providers/fake.py", "def f():\n    import numpy\n", "providers/fake.py:2: lazy import of numpy"),
        # A core module the local provider runs: another extra declaring the package is not enough.
        ("sdk/_base_model.py", "def f():\n    import torch\n", "needs torch, not declared in anytune[hf]"),
        ("sdk/_data/hub.py", "def f():\n    import tokenizers\n", "needs tokenizers, not declared in anytune[data]"),
    ],
)
def test_an_undeclared_import_is_reported(file: str, source: str, message: str, table: Mapping[str, list[str]]) -> None:
    problems = undeclared({file: source}, PYPROJECT["project"], table)
    assert len(problems) == 1 and message in problems[0], problems


@pytest.mark.parametrize(
    ("file", "source"),
    [
        ("sdk/_x.py", "def f():\n    import torch\n"),  # a lazy optional feature of the core
        ("sdk/_x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import openai\n"),
        ("providers/openai/x.py", "import httpx2\nfrom azure.identity import get_bearer_token_provider\n"),
        ("local_backend/x.py", "import numpy, safetensors.torch, huggingface_hub\n"),
        ("sdk/testing/x.py", "import pytest\n"),
    ],
)
def test_a_declared_import_passes(file: str, source: str, table: Mapping[str, list[str]]) -> None:
    assert undeclared({file: source}, PYPROJECT["project"], table) == []
