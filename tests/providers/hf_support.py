"""Wiring shared by the Hugging Face tests: the fake Hub behind the real client, an isolated HF home.

A test builds its providers with :func:`provider`: the fake's client factory, the fake clock's
sleep and clock, and no jitter come in through the constructor, and the provider instance goes to
``FineTuneJob.create(provider=...)`` / ``FineTuneJob.get(ref, provider=...)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from anytune._config import resolve
from anytune.providers.huggingface import HuggingFaceProvider, HuggingFaceSettings
from tests.conftest import FakeClock
from tests.providers.hf_fake import TOKEN, FakeHub

BASE_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def provider(hub: FakeHub, settings: HuggingFaceSettings | None = None) -> HuggingFaceProvider:
    """A provider talking to ``hub``, its retries sleeping on the hub's clock, without jitter.

    Without ``settings``, they are resolved from the environment and profiles, as
    ``FineTuneJob.create(provider="huggingface")`` resolves them (``ANYTUNE_HUGGINGFACE_TOKEN``...).
    """
    if settings is None:
        resolved = resolve(provider="huggingface").settings
        assert isinstance(resolved, HuggingFaceSettings)
        settings = resolved
    clock = hub.clock
    assert isinstance(clock, FakeClock), "install() gives the hub a FakeClock"
    return HuggingFaceProvider(
        settings, sleep=clock.sleep, clock=clock, rand=lambda: 0.0, http_client_factory=hub.client
    )


@contextlib.contextmanager
def _isolate_huggingface_hub(monkeypatch: pytest.MonkeyPatch, home: Path) -> Iterator[None]:
    """The one place these tests reach past huggingface_hub's public API, and why.

    * ``HF_TOKEN_PATH`` and ``AGENT_HARNESSES_PATH`` are computed from ``HF_HOME`` when
      huggingface_hub is imported, so setting those variables now changes nothing: the module
      constants are pointed at ``home`` instead, so that neither the developer's login nor their
      cache can change a result, and the tests never write into them.
    * The provider installs its client factory with the public ``set_client_factory``, which is
      process-wide; huggingface_hub offers no public way to read the previous factory, so the
      default one (``utils._http.default_client_factory``) is put back by name afterwards, so no
      later test talks to this test's fake.
    * ``HF_HUB_DISABLE_XET`` is read at import too. With the ``hf_xet`` package installed,
      huggingface_hub sends every file the Hub puts in LFS through Xet, without asking the server
      first, and Xet's own (Rust) client connects to the endpoint itself, past any client factory:
      to the real huggingface.co here. The fake speaks the LFS batch API instead, which
      huggingface_hub uses when Xet is disabled (its documented switch), so the constant is set.
      The commit that follows is the same either way (``lfsFile`` lines naming sha256 and size).
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils._http import default_client_factory

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    try:
        yield
    finally:
        huggingface_hub.set_client_factory(default_client_factory)


def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Iterator[FakeHub]:
    """A :class:`FakeHub` (with the base model) for :func:`provider`, an isolated HF home, ``HF_TOKEN`` set."""
    hub = FakeHub(clock)
    hub.add_repo("model", BASE_MODEL, {"config.json": b"{}"})
    home = tmp_path / "hf-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with _isolate_huggingface_hub(monkeypatch, home):
        yield hub
