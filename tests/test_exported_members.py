"""The public surface: ``anytune.__all__`` is sorted and lists exactly what the package exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import anytune
from anytune import errors

PUBLIC_DUNDERS = {"__version__"}


def isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_SNAKE_CASE, then CamelCase, then everything else."""
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and len(name) > 1:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted() -> None:
    assert anytune.__all__ == sorted(anytune.__all__, key=isort_key)
    assert len(set(anytune.__all__)) == len(anytune.__all__)
    assert errors.__all__ == sorted(errors.__all__, key=isort_key)


def test_all_lists_exactly_the_public_names() -> None:
    # A fresh interpreter: in this one, other tests import submodules (anytune.providers...) that
    # Python then sets as attributes of the package.
    code = "import anytune, json; print(json.dumps(sorted(vars(anytune))))"
    names = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    public = {n for n in names if not n.startswith("_") or n in PUBLIC_DUNDERS}
    assert set(anytune.__all__) == public


def test_every_exported_name_resolves() -> None:
    namespace: dict[str, object] = {}
    exec("from anytune import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(anytune.__all__)
    for name in anytune.__all__:
        assert getattr(anytune, name) is namespace[name]


def test_every_error_is_exported_and_in_the_tree() -> None:
    for name in errors.__all__:
        error = getattr(errors, name)
        assert getattr(anytune, name) is error
        assert issubclass(error, anytune.AnytuneError)
    public_errors = {
        n
        for n in anytune.__all__
        if isinstance(getattr(anytune, n), type) and issubclass(getattr(anytune, n), BaseException)
    }
    assert public_errors == set(errors.__all__)


def test_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", anytune.__version__)
