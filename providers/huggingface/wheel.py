"""The wheel of the running anytune that a job installs: shared with every remote-trainer provider,
so it lives in :mod:`anytune.local_backend.jobpackage`; re-exported here where it always was.

The wheel is pure Python: the installed files, zipped deterministically, with the installed
distribution's metadata (its ``local`` extra pulls torch, transformers, peft, accelerate,
bitsandbytes). Every subpackage is walked, so providers' packages and ``local_backend`` ship whole.
"""

from __future__ import annotations

from anytune.local_backend.jobpackage import build_wheel, package_files

__all__ = ["build_wheel", "package_files"]
