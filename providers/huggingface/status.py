"""Hugging Face Jobs stages and the uniform status each one means (pure)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from anytune._types import JobStatus

__all__ = ["HF_STAGE", "map_stage"]

logger = logging.getLogger("anytune.providers.huggingface")

#: Hugging Face Jobs stages. ``UPDATING`` is a running job whose settings (labels, ports) change;
#: ``DELETED`` is a job removed by its owner: it stopped without a result, as a cancel does.
HF_STAGE: Mapping[str, JobStatus] = {
    "SCHEDULING": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING,
    "UPDATING": JobStatus.RUNNING,
    "COMPLETED": JobStatus.SUCCEEDED,
    "CANCELED": JobStatus.CANCELLED,
    "ERROR": JobStatus.FAILED,
    "DELETED": JobStatus.CANCELLED,
}


def map_stage(stage: str | None) -> JobStatus:
    """The uniform status of a Jobs stage.

    An unknown stage (the service adding one) maps to ``running``: not terminal, so ``wait`` keeps
    polling instead of reporting an outcome that did not happen; the raw stage stays on the record.
    """
    found = HF_STAGE.get((stage or "").upper())
    if found is None:
        logger.warning("unknown Hugging Face job stage %r; treating it as running", stage)
        return JobStatus.RUNNING
    return found
