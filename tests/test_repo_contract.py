"""What the repository promises a new user: README commands, CI, layout, typing."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _first_code_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README has no fenced code block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_test_command() -> None:
    commands = _first_code_block()
    test_command = commands[-1]
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_layout_of_the_design_card() -> None:
    for name in ("pyproject.toml", "README.md", "sdk", "providers", "local_backend", "samples", "tests", "bench"):
        assert (ROOT / name).exists(), name
    assert (ROOT / "sdk" / "py.typed").is_file()


def test_package_mapping_is_what_python_imports() -> None:
    import anytune
    import anytune.local_backend
    import anytune.providers

    assert Path(anytune.__file__).resolve().parent == ROOT / "sdk"
    assert Path(anytune.providers.__file__).resolve().parent == ROOT / "providers"
    assert Path(anytune.local_backend.__file__).resolve().parent == ROOT / "local_backend"


@pytest.mark.slow
def test_package_is_type_clean(tmp_path: Path) -> None:
    """mypy --strict over the package as Python sees it (folders linked into one 'anytune' tree)."""
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    tree = runpy.run_path(str(ROOT / ".ci" / "package_tree.py"))["build"](tmp_path)
    assert (tree / "anytune" / "providers").is_dir()
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "-p",
            "anytune",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
