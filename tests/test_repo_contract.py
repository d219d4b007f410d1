"""What the repository promises a new user: README commands, CI, layout, typing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from anytune._compat import tomllib
from tests.local.test_demo import README_DEMO_COMMAND

ROOT = Path(__file__).parents[1]

#: The documents whose repository paths a reader follows (pyproject.toml: its comments only).
DOCUMENTS = ("pyproject.toml", "README.md", "CONTRIBUTING.md", "ARCHITECTURE.md")
_TOP = ("tests", "sdk", "providers", "local_backend", "samples", "bench", ".ci")
# A path starts a word (not the tail of a URL or of anytune/providers/...) and runs to whitespace,
# a quote, a bracket or a backtick; `<name>` is a placeholder and matches any one name.
# A leading "./" is dropped, and so is a trailing ":line" or "::test_name" (pytest's node ids).
_PATH = re.compile(r"(?<![\w./<>-])(?:\./)?((?:" + "|".join(re.escape(t) for t in _TOP) + r")/[^\s`\"'()\[\]]*)")
_SUFFIX = re.compile(r"(?:::[\w.]+|:\d+(?::\d+)?)$")


def _first_code_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README has no fenced code block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def named_paths(text: str, *, comments_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, path) for each repository path ``text`` names; sentence punctuation dropped."""
    for number, line in enumerate(text.splitlines(), 1):
        if comments_only:
            if "#" not in line:
                continue
            line = line[line.index("#") :]
        for match in _PATH.finditer(line):
            yield number, _SUFFIX.sub("", match[1].rstrip(".,;:"))


def _exists(path: str) -> bool:
    pattern = re.sub(r"<[^<>/]+>", "*", path).rstrip("/")
    if any(c in pattern for c in "*?["):
        return any(ROOT.glob(pattern))
    return (ROOT / pattern).exists()


def test_named_paths_finds_what_a_reader_would_follow() -> None:
    # The regression this guards: a pyproject comment naming a test file that was never written.
    toml = "\n".join(
        [
            "x = 1  # checked by tests/test_typing.py.",
            'url = "https://example.invalid/tests/x.py"',
            "# sdk/_cli/, see .ci/run",
        ]
    )
    assert list(named_paths(toml, comments_only=True)) == [
        (1, "tests/test_typing.py"),
        (3, "sdk/_cli/"),
        (3, ".ci/run"),
    ]
    markdown = "See `providers/<name>/status.py` and [the kit](samples/provider_template/), not anytune/providers/x."
    assert [p for _, p in named_paths(markdown)] == ["providers/<name>/status.py", "samples/provider_template/"]
    node_ids = "Run ./tests/test_cli.py::test_help or see sdk/errors.py:12, bench/gpu.sh:3:5."
    assert [p for _, p in named_paths(node_ids)] == ["tests/test_cli.py", "sdk/errors.py", "bench/gpu.sh"]
    assert not _exists("tests/test_typing.py")
    assert _exists("providers/<name>/status.py") and not _exists("providers/<name>/nothing_here.py")
    assert _exists("tests/providers/test_openai*.py") and not _exists("tests/providers/test_nothing*.py")


def test_every_repository_path_the_documents_name_exists() -> None:
    named: list[str] = []
    missing: list[str] = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text(encoding="utf-8")
        for number, path in named_paths(text, comments_only=document.endswith(".toml")):
            named.append(path)
            if not _exists(path):
                missing.append(f"{document}:{number}: {path}")
    assert not missing, "paths named in the documents that the repository does not have:\n" + "\n".join(missing)
    # The extractor still sees the documents' paths (a regex that matched nothing would pass above).
    assert {"tests/test_dependencies.py", ".ci/static", "samples/data/train.jsonl", "local_backend/rundir.py"} <= set(
        named
    )


def test_paths_pyproject_configures_exist() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    configured = [
        *config["tool"]["setuptools"]["package-dir"].values(),
        *config["tool"]["pytest"]["ini_options"]["testpaths"],
    ]
    assert [path for path in configured if not (ROOT / path).is_dir()] == []


def test_readme_first_commands_are_the_demo_and_the_ci_suite() -> None:
    """The README's first block: the install + demo tests/local/test_demo.py runs, then .ci/run's line."""
    commands = _first_code_block()
    assert len(commands) == 2, commands
    demo, suite = commands
    steps = [step.strip() for step in demo.split("&&")]
    assert steps[-1] == README_DEMO_COMMAND, demo
    assert any(step.startswith(".venv/bin/pip install") and '".[local]"' in step for step in steps), demo
    assert suite in (ROOT / ".ci" / "run").read_text().splitlines(), suite


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


def test_ci_type_checks_the_package_as_python_sees_it() -> None:
    """mypy --strict over the package as Python sees it (folders linked into one 'anytune' tree) is
    .ci/static's job, with every extra and with the core alone; the test suite does not run it a
    third time (it took 160 of the suite's seconds)."""
    static = (ROOT / ".ci" / "static").read_text()
    assert "package_tree.py" in static and static.count("-m mypy") >= 2
    assert "bash .ci/static" in (ROOT / ".ci" / "run").read_text()
