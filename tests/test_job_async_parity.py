"""``AsyncFineTuneJob`` offers every method ``FineTuneJob`` has, as coroutines, doing the same."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

from anytune import AsyncFineTuneJob, FineTuneJob, NotSupportedError


def _public(cls: type) -> dict[str, Any]:
    """Public names of ``cls`` (inherited ones included) and what they are, unwrapped."""
    return {name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")}


def test_async_handle_has_every_method_of_the_sync_one() -> None:
    sync, async_ = _public(FineTuneJob), _public(AsyncFineTuneJob)
    assert sorted(set(sync) - set(async_)) == []
    assert sorted(set(async_) - set(sync)) == []


def test_every_async_method_is_awaited_or_iterated_asynchronously() -> None:
    for name, member in _public(AsyncFineTuneJob).items():
        if isinstance(member, property):
            continue
        func = member.__func__ if isinstance(member, classmethod | staticmethod) else member
        assert inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func), name
        sync = inspect.getattr_static(FineTuneJob, name)
        assert isinstance(sync, classmethod) == isinstance(member, classmethod), f"{name}: classmethod on one only"


def test_async_plan_matches_the_sync_plan(chat_jsonl: Path) -> None:
    fields: dict[str, Any] = {"provider": "fake", "base_model": "tiny", "training_file": chat_jsonl}
    planned = asyncio.run(AsyncFineTuneJob.plan(quantization="4bit", hyperparameters={"epochs": 2}, **fields))
    assert planned == FineTuneJob.plan(quantization="4bit", hyperparameters={"epochs": 2}, **fields)
    assert planned.requests[0].body["hyperparameters"] == {"epochs": 2}
    assert FineTuneJob.list(refresh=False) == []  # a plan records nothing


@pytest.mark.parametrize(
    ("verb", "can"), [("pause", ["azure-openai", "openai"]), ("resume", ["azure-openai", "local", "openai"])]
)
def test_async_pause_and_resume_refusals_name_who_can(chat_jsonl: Path, verb: str, can: list[str]) -> None:
    async def main() -> None:
        job = await AsyncFineTuneJob.create(
            provider="fake", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 60}
        )
        with pytest.raises(NotSupportedError) as info:
            await getattr(job, verb)()
        assert info.value.provider == "fake" and info.value.field == verb
        assert info.value.alternatives == can

    asyncio.run(main())


def test_async_pause_and_resume_on_a_provider_that_can(chat_jsonl: Path) -> None:
    from anytune import ProviderEntry, register
    from tests.test_cli_parity import PausableProvider

    register(ProviderEntry("pausable", "tests.test_cli_parity:PausableProvider"))
    PausableProvider.calls = []

    async def main() -> None:
        job = await AsyncFineTuneJob.create(
            provider="pausable", base_model="tiny", training_file=chat_jsonl, fake={"seconds": 60}
        )
        paused = await job.pause()
        assert paused.status.value == "paused" and job.record.status.value == "paused"
        resumed = await job.resume()
        assert resumed.status.value != "paused"
        assert PausableProvider.calls == [("pause", job.id), ("resume", job.id)]

    asyncio.run(main())
