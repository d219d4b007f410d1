"""Wiring shared by the Hugging Face tests: the fake Hub behind the real client, an isolated HF home."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FakeClock
from tests.providers.hf_fake import TOKEN, FakeHub

BASE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Iterator[FakeHub]:
    """Send every huggingface_hub request of this process to a :class:`FakeHub`; sleep on ``clock``.

    Also points huggingface_hub's token file and registry cache at ``tmp_path`` so that neither the
    developer's login nor their cache can change a result, and sets ``HF_TOKEN``.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent, _http

    from anytune.providers import huggingface as hf

    hub = FakeHub(clock)
    hub.add_repo("model", BASE_MODEL, {"config.json": b"{}"})
    home = tmp_path / "hf-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    monkeypatch.setattr(_detect_agent, "_registry", None)
    # huggingface_hub's own back-off (preupload, pagination) sleeps on the fake clock too.
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=clock.sleep, time=clock, monotonic=clock))
    monkeypatch.setattr(hf.HOOKS, "sleep", clock.sleep)
    monkeypatch.setattr(hf.HOOKS, "clock", clock)
    monkeypatch.setattr(hf.HOOKS, "rand", lambda: 0.0)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    huggingface_hub.set_client_factory(hub.client)
    try:
        yield hub
    finally:
        huggingface_hub.set_client_factory(_http.default_client_factory)
