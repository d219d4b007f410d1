"""Which device ``auto`` means here: the one answer the provider, the trainer and inference share.

Light on purpose: torch is imported only to answer ``auto``, and a machine without torch answers
``cpu``, so the local provider can plan a run without loading the trainer's dependencies. On Linux a
GPU torch can use has a device node (NVIDIA's, ROCm's, which torch calls cuda too, or WSL's): with
none, ``auto`` is the CPU without importing torch (seconds, in the CLI and in every worker).
"""

from __future__ import annotations

import importlib.util
import os
import sys

_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")

__all__ = ["device_kind"]


def device_kind(requested: str | None = "auto") -> str:
    """``requested`` itself unless it is ``auto``/None; then cuda, else mps, else cpu."""
    if requested not in (None, "auto"):
        return str(requested)
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    if sys.platform == "linux" and not any(os.path.exists(p) for p in _GPU_NODES):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"
