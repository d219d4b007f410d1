"""Where anytune keeps its state: a leaf module, so every layer can ask without importing config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["anytune_home"]


def anytune_home(env: Mapping[str, str] | None = None) -> Path:
    """Where anytune keeps its job store and run directories (``ANYTUNE_HOME``, else the user data dir)."""
    env = os.environ if env is None else env
    if env.get("ANYTUNE_HOME"):
        return Path(env["ANYTUNE_HOME"]).expanduser()
    import platformdirs

    return platformdirs.user_data_path("anytune", appauthor=False)
