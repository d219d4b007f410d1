"""Shared fixtures: an isolated anytune environment, a network guard and small datasets.

Every test runs with ``ANYTUNE_HOME`` and ``ANYTUNE_CONFIG_DIR`` in fresh temporary folders, no
``ANYTUNE_*`` / ``OPENAI_*`` / ``AZURE_*`` / ``HF_*`` variables, and a temporary working directory,
so neither the developer's configuration nor a real ``anytune.toml`` can change a result.
"""

from __future__ import annotations

import csv
import importlib.util
import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from anytune.testing import FakeClock

ISOLATED_PREFIXES = ("ANYTUNE_", "OPENAI_", "AZURE_", "HF_")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Fresh home, config dir and working directory; no anytune, OpenAI, Azure or HF variables."""
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES):
            monkeypatch.delenv(name)
    root = tmp_path_factory.mktemp("anytune-env")
    home, config_dir, work = root / "home", root / "config", root / "work"
    for folder in (home, config_dir, work):
        folder.mkdir()
    monkeypatch.setenv("ANYTUNE_HOME", str(home))
    monkeypatch.setenv("ANYTUNE_CONFIG_DIR", str(config_dir))
    monkeypatch.chdir(work)
    yield root


@pytest.fixture
def anytune_home(isolated_env: Path) -> Path:
    return isolated_env / "home"


@pytest.fixture
def config_dir(isolated_env: Path) -> Path:
    return isolated_env / "config"


@pytest.fixture
def workdir(isolated_env: Path) -> Path:
    return isolated_env / "work"


@pytest.fixture(autouse=True)
def _registry_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run-time registrations made by a test do not leak into the next one."""
    from anytune import _registry

    monkeypatch.setattr(_registry, "_extra", dict(_registry._extra))
    monkeypatch.setattr(_registry, "_entry_points_loaded", _registry._entry_points_loaded)


class NetworkBlocked(RuntimeError):
    """Raised by the network guard; the test also fails at teardown even if the code caught it."""


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else address
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Any connection to a non-loopback address raises and fails the test."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def check(address: Any) -> None:
        if not _is_local(address):
            attempts.append(address)
            raise NetworkBlocked(f"test tried to reach the network: {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        check(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield attempts
    if attempts:
        pytest.fail(f"network access attempted: {attempts}")


def chat_example(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
        ]
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], delimiter: str = ",") -> Path:
    """``rows`` as a CSV (or, with ``delimiter="\\t"``, TSV) file with a header row of the first row's keys."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def chat_jsonl(tmp_path: Path) -> Path:
    """A small valid chat dataset (12 user/assistant examples)."""
    return write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])


@pytest.fixture
def valid_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "valid.jsonl", [chat_example(100 + i) for i in range(4)])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def run_python(code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this test's environment and working directory."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script that is not in a package (the benches) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look modules up by name
    spec.loader.exec_module(module)
    return module
