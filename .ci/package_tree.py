"""Link sdk/, providers/ and local_backend/ into one `anytune` folder, as an installed wheel lays them out.

Tools that read a package from disk by its import name (mypy, import-linter's grimp) find only sdk/
through the editable install's package-dir mapping; this tree shows them the whole package.

    python .ci/package_tree.py DEST     # prints DEST; put it first on PYTHONPATH / MYPYPATH
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(dest: Path) -> Path:
    """Create ``dest/anytune`` (links to the source folders) and return ``dest``."""
    tree = dest / "anytune"
    tree.mkdir(parents=True, exist_ok=True)
    for item in (ROOT / "sdk").iterdir():
        if item.name != "__pycache__" and not (tree / item.name).exists():
            (tree / item.name).symlink_to(item)
    for name in ("providers", "local_backend"):
        if not (tree / name).exists():
            (tree / name).symlink_to(ROOT / name)
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1]).resolve()))
