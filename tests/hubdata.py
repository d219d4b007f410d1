"""The fake Hugging Face Hub serving dataset repos to the real ``datasets`` and huggingface_hub.

The fake (:mod:`tests.providers.hf_fake`) holds dataset repos of JSON Lines files; ``datasets``
finds their splits from the file names (``data/train.jsonl``), or from the configs of the
README's YAML, exactly as on huggingface.co. Both libraries read their endpoint, offline switch and
cache folders at import, so :func:`serve_hub_datasets` points those module constants at the fake
and at the test's folders (the variables are set too, for what anytune reads itself). Shared by
the data tests and the local end-to-end job from a Hub dataset id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FakeClock
from tests.providers.hf_fake import FakeHub

ENDPOINT = "http://hub.test"
REPO = "acme/qa"
QA = [{"question": f"What is {i} plus {i}?", "answer": f"{2 * i}.", "id": i} for i in range(20)]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def card(*, sizes: dict[str, int] | None = None, configs: str = "") -> bytes:
    """A dataset card whose YAML gives the splits' sizes (``dataset_info``) and configs, as the Hub's do."""
    lines = ["---"]
    if sizes:
        lines += ["dataset_info:", "  splits:"]
        lines += [f"  - name: {name}\n    num_examples: {n}" for name, n in sizes.items()]
    lines += [configs.rstrip("\n")] if configs else []
    lines += ["---", "# A dataset", ""]
    return "\n".join(lines).encode()


@contextmanager
def serve_hub_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[FakeHub]:
    """The fake Hub holding ``acme/qa`` (train: the 20 rows of :data:`QA`, test: 3), read anonymously
    or with ``HF_TOKEN``, in place of huggingface.co for this process."""
    import datasets
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils._http import default_client_factory

    fake = FakeHub(clock)
    fake.anonymous_reads = True
    fake.add_repo("dataset", REPO, {"data/train.jsonl": jsonl(QA), "data/test.jsonl": jsonl(QA[:3])})
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("HF_HOME", str(home))
    for module, name, value in (
        (constants, "ENDPOINT", ENDPOINT),
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE", ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"),
        (constants, "HF_HUB_CACHE", str(home / "hub")),
        (constants, "HF_TOKEN_PATH", str(home / "token")),
        (constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens")),
        (constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json")),
        (constants, "HF_HUB_DISABLE_XET", True),
        (constants, "HF_HUB_OFFLINE", False),
        (datasets.config, "HF_ENDPOINT", ENDPOINT),
        (datasets.config, "HUB_DATASETS_URL", ENDPOINT + "/datasets/{repo_id}/resolve/{revision}/{path}"),
        (datasets.config, "HF_DATASETS_CACHE", home / "datasets"),
        (datasets.config, "HF_MODULES_CACHE", home / "modules"),
        (datasets.config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads"),
        (datasets.config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted"),
        (datasets.config, "HF_HUB_OFFLINE", False),
    ):
        monkeypatch.setattr(module, name, value, raising=hasattr(module, name))
    huggingface_hub.set_client_factory(fake.client)
    try:
        yield fake
    finally:
        huggingface_hub.set_client_factory(default_client_factory)
