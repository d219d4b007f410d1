"""Every test gets its own anytune home and config folder: the job store and runs stay in tmp."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_anytune(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path_factory.mktemp("anytune")
    monkeypatch.setenv("ANYTUNE_HOME", str(root / "home"))
    monkeypatch.setenv("ANYTUNE_CONFIG_DIR", str(root / "config"))
    for name in ("ANYTUNE_PROFILE", "ANYTUNE_PROVIDER", "ANYTUNE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
