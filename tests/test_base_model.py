"""The base model is checked before a job is recorded or started: a folder must hold a model, a Hub
id must resolve (offline: from the local Hub cache), and a spec file's paths are the file's.

The Hub is a small HTTP server on loopback (``HF_ENDPOINT``) answering ``/api/models/<id>`` as the
Hub does, reached through the real huggingface_hub client; no test touches the internet.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from anytune import FineTuneJob
from anytune.errors import (
    ConfigError,
    ModelNotAvailableError,
    NotSupportedError,
    ServiceUnavailableError,
)
from anytune.providers.local import LocalProvider, LocalSettings
from tests.clitools import jobs_in_store, run_cli
from tests.loopback import LoopbackServer, serving

#: Generous: the behaviour is "at once, not after a minute of retries", not a performance figure.
AT_ONCE_S = 10.0
#: Timed calls run on the CPU: choosing "auto" would import torch, which is not what is timed.
CPU = {"device": "cpu"}
SHA = "0123456789abcdef0123456789abcdef01234567"
MODEL_ID = "acme/tiny-chat"


# -- a Hub on loopback ---------------------------------------------------------------------------------


class _HubHandler(http.server.BaseHTTPRequestHandler):
    server: _HubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.seen.append(path)
        found = re.fullmatch(r"/api/models/([^/]+/[^/]+|[^/]+)(/auth-check)?", path)
        model = self.server.models.get(found[1]) if found else None
        if model is not None and model.get("_slow"):
            self.server.released.wait(10)  # far longer than the test's hub_timeout
        if found is None or model is None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        elif found[2]:
            if model["gated"]:
                self._send(403, {"error": "Access restricted"}, {"X-Error-Code": "GatedRepo"})
            else:
                self._send(200, {})
        else:
            self._send(200, model)


class _HubServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_HubHandler)
        self.models: dict[str, dict[str, Any]] = {}
        self.seen: list[str] = []

    def add(
        self, repo_id: str, files: tuple[str, ...] = ("config.json", "model.safetensors"), gated: bool = False
    ) -> None:
        # The fields huggingface_hub's ModelInfo reads, as the Hub sends them.
        self.models[repo_id] = {
            "_id": "65f0c0ffee",
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": SHA,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "private": False,
            "gated": "manual" if gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["transformers"],
            "siblings": [{"rfilename": f} for f in files],
        }


@pytest.fixture
def quiet_hub_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub fetches an agent registry from huggingface.co once a day for its headers:
    a fresh cached copy keeps that at home (its path is fixed when it is imported)."""
    from huggingface_hub import constants

    registry = tmp_path / "agent_harnesses.json"
    registry.write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(registry))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, quiet_hub_client: None) -> Iterator[_HubServer]:
    with serving(_HubServer()) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_folder(where: Path) -> Path:
    """A folder that looks like a Hugging Face model to the check (config.json)."""
    where.mkdir(parents=True)
    (where / "config.json").write_text('{"model_type": "llama"}')
    return where


def cache_model(cache: Path, repo_id: str) -> None:
    """``repo_id`` in a Hub cache laid out as huggingface_hub lays it out (refs/main -> snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    snapshot = repo / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


def local_plan(base_model: str, train: Path, **fields: Any) -> Any:
    # CPU and no dataset checks: the plan alone, without torch or a tokenizer.
    fields.setdefault("local", CPU)
    return FineTuneJob.plan(provider="local", base_model=base_model, training_file=train, validate_data=False, **fields)


def nothing_recorded(home: Path) -> bool:
    return FineTuneJob.list() == [] and jobs_in_store(home) == 0 and not (home / "runs").exists()


# -- local folders ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "make", "words"),
    [
        ("./no-such-model", None, "does not exist"),
        ("../elsewhere/no-such-model", None, "does not exist"),
        ("{tmp}/no/such/model", None, "does not exist"),
        ("~/anytune-no-such-model-here", None, "does not exist"),
        ("{tmp}/weights.bin", "file", "is a file"),
        ("{tmp}/empty", "empty", "holds no config.json"),
        ("{tmp}/adapter", "adapter", "holds a LoRA adapter"),
    ],
)
def test_a_base_model_folder_that_holds_no_model_is_refused_before_anything_is_recorded(
    chat_jsonl: Path, tmp_path: Path, anytune_home: Path, given: str, make: str | None, words: str
) -> None:
    name = given.format(tmp=tmp_path)
    target = Path(name)
    if make == "file":
        target.write_bytes(b"\0" * 8)
    elif make in ("empty", "adapter"):
        target.mkdir()
    if make == "adapter":
        (target / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "Qwen/Qwen2.5-0.5B"}))
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(provider="local", base_model=name, training_file=chat_jsonl, local=CPU)
    message = str(info.value)
    assert info.value.field == "base_model" and words in message and repr(name) in message
    if make == "adapter":
        assert "'Qwen/Qwen2.5-0.5B'" in message  # the model to give instead
    assert nothing_recorded(anytune_home)


def test_a_relative_folder_is_named_with_where_it_was_looked_for(chat_jsonl: Path, workdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(provider="local", base_model="./models/tiny", training_file=chat_jsonl, local=CPU)
    assert str(workdir / "models" / "tiny") in str(info.value)


def test_a_folder_holding_a_model_passes_with_no_network(
    chat_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = model_folder(tmp_path / "acme" / "tiny")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # a look-up would fail
    plan = local_plan(str(folder), chat_jsonl)
    assert plan.requests[0].body["spec"]["base_model"] == str(folder)


def test_an_existing_folder_wins_over_a_hub_id_of_the_same_name(
    chat_jsonl: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_folder(workdir / "acme" / "tiny")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    plan = local_plan("acme/tiny", chat_jsonl)
    assert plan.requests[0].body["spec"]["base_model"] == str(workdir / "acme" / "tiny")


def test_cli_refuses_a_missing_folder_with_exit_2_and_stores_nothing(
    chat_jsonl: Path, capsys: pytest.CaptureFixture[str], anytune_home: Path, workdir: Path
) -> None:
    for extra in ((), ("--dry-run",)):
        result = run_cli(
            capsys,
            "jobs",
            "create",
            "--provider",
            "local",
            "--base-model",
            "./models/missing",
            "--training-file",
            str(chat_jsonl),
            *extra,
        )
        assert result.code == 2, result.err
        assert "base_model" in result.err and str(workdir / "models" / "missing") in result.err
        assert "Traceback" not in result.err
    listed = run_cli(capsys, "jobs", "list", "--json")
    assert listed.code == 0 and json.loads(listed.out) == []
    assert nothing_recorded(anytune_home)


# -- Hub ids ------------------------------------------------------------------------------------------


def test_a_hub_id_is_looked_up_once(hub: _HubServer, chat_jsonl: Path) -> None:
    hub.add(MODEL_ID)
    plan = local_plan(MODEL_ID, chat_jsonl)
    assert plan.requests[0].body["spec"]["base_model"] == MODEL_ID
    assert hub.seen == [f"/api/models/{MODEL_ID}"]


def test_an_unknown_hub_id_is_no_such_model(hub: _HubServer, chat_jsonl: Path, anytune_home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(provider="local", base_model="acme/no-such-model", training_file=chat_jsonl, local=CPU)
    message = str(info.value)
    assert info.value.field == "base_model" and "no such model" in message and "'acme/no-such-model'" in message
    assert urlsplit(hub.url).netloc in message  # which Hub said so
    assert hub.seen == ["/api/models/acme/no-such-model"]  # once: no retries
    assert nothing_recorded(anytune_home)


def test_a_gated_model_without_access_says_it_needs_a_token(
    hub: _HubServer, chat_jsonl: Path, anytune_home: Path
) -> None:
    hub.add("meta/gated", gated=True)
    with pytest.raises(ModelNotAvailableError) as info:
        FineTuneJob.create(provider="local", base_model="meta/gated", training_file=chat_jsonl, local=CPU)
    assert "gated" in str(info.value) and "token" in str(info.value)
    assert nothing_recorded(anytune_home)


def test_a_hub_repo_without_config_json_is_not_a_model(hub: _HubServer, chat_jsonl: Path) -> None:
    hub.add("acme/gguf-only", files=("model.gguf",))
    with pytest.raises(ConfigError, match=r"no config\.json") as info:
        local_plan("acme/gguf-only", chat_jsonl)
    assert info.value.field == "base_model"


def test_something_neither_a_folder_nor_an_id_is_refused_without_a_lookup(hub: _HubServer, chat_jsonl: Path) -> None:
    with pytest.raises(ConfigError, match="neither an existing folder nor a Hub model id"):
        local_plan("acme/bad--name", chat_jsonl)
    assert hub.seen == []


def test_an_unreachable_hub_fails_at_once_naming_the_host(
    chat_jsonl: Path, anytune_home: Path, monkeypatch: pytest.MonkeyPatch, quiet_hub_client: None
) -> None:
    port = _closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as info:
        FineTuneJob.create(provider="local", base_model=MODEL_ID, training_file=chat_jsonl, local=CPU)
    assert time.monotonic() - started < AT_ONCE_S
    message = str(info.value)
    assert "cannot reach 127.0.0.1: connection refused" in message and "'acme/tiny-chat'" in message
    assert "not in the local Hub cache" in message
    assert nothing_recorded(anytune_home)


def test_an_unreachable_hub_with_the_model_cached_points_to_hf_hub_offline(
    chat_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_hub_client: None
) -> None:
    cache_model(tmp_path / "hf-cache", MODEL_ID)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(ServiceUnavailableError, match="set HF_HUB_OFFLINE=1"):
        local_plan(MODEL_ID, chat_jsonl)


def test_a_hub_that_does_not_answer_in_hub_timeout_fails_then(hub: _HubServer, chat_jsonl: Path) -> None:
    hub.add(MODEL_ID)
    hub.models[MODEL_ID]["_slow"] = True
    provider = LocalProvider(LocalSettings(hub_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="no answer in time"):
        FineTuneJob.plan(
            provider=provider, base_model=MODEL_ID, training_file=chat_jsonl, validate_data=False, local=CPU
        )
    assert time.monotonic() - started < 8  # the server answers after 10 s
    assert hub.seen == [f"/api/models/{MODEL_ID}"]  # not retried


def test_the_lookup_timeout_is_a_setting(hub: _HubServer, chat_jsonl: Path) -> None:
    hub.add(MODEL_ID)
    seen: list[float | None] = []

    class Recording:
        endpoint = hub.url

        def model_info(self, repo_id: str, *, timeout: float | None = None) -> Any:
            seen.append(timeout)
            from huggingface_hub import HfApi

            return HfApi(endpoint=hub.url).model_info(repo_id, timeout=timeout)

        def auth_check(self, repo_id: str, *, repo_type: str | None = None) -> None:
            raise AssertionError("not gated")

    provider = LocalProvider(LocalSettings(hub_timeout=2.5), hub_client=Recording())
    FineTuneJob.plan(
        provider=provider, base_model=MODEL_ID, training_file=chat_jsonl, validate_data=False, local={"device": "cpu"}
    )
    assert seen == [2.5]


# -- offline ------------------------------------------------------------------------------------------


def test_offline_and_not_cached_fails_at_once(
    chat_jsonl: Path,
    tmp_path: Path,
    anytune_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="not in the local Hub cache"):
        FineTuneJob.create(
            provider="local", base_model="Qwen/Qwen2.5-0.5B-Instruct", training_file=chat_jsonl, local=CPU
        )
    assert time.monotonic() - started < AT_ONCE_S
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "local",
        "--base-model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--training-file",
        str(chat_jsonl),
    )
    assert result.code == 2, result.err
    assert "offline" in result.err and "not in the local Hub cache" in result.err
    assert "'Qwen/Qwen2.5-0.5B-Instruct'" in result.err and "base_model" in result.err
    assert nothing_recorded(anytune_home)


def test_offline_and_cached_passes_without_a_request(
    chat_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_model(tmp_path / "cache", MODEL_ID)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert local_plan(MODEL_ID, chat_jsonl).provider == "local"


# -- spec files -------------------------------------------------------------------------------------------


def _spec_file(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.toml"
    path.write_text(body)
    return path


def _planned_spec(capsys: pytest.CaptureFixture[str], spec_file: Path) -> dict[str, Any]:
    result = run_cli(capsys, "jobs", "create", "-f", str(spec_file), "--no-validate-data", "--dry-run")
    assert result.code == 0, result.err
    return dict(json.loads(result.out)["requests"][0]["body"]["spec"])


@pytest.mark.parametrize("written", ["./models/tiny", "models/tiny"])
def test_a_spec_files_paths_are_relative_to_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, chat_jsonl: Path, written: str
) -> None:
    project = tmp_path / "project"
    model_folder(project / "models" / "tiny")
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_bytes(chat_jsonl.read_bytes())
    (project / "template.jinja").write_text("just a file")
    spec_file = _spec_file(
        project,
        f'provider = "local"\nbase_model = "{written}"\ntraining_file = "data/train.jsonl"\n'
        '[local]\ndevice = "cpu"\noutput_dir = "out/adapter"\nchat_template = "template.jinja"\n',
    )
    spec = _planned_spec(capsys, spec_file)  # from the test's own working directory, elsewhere
    assert spec["base_model"] == str(project / "models" / "tiny")
    assert spec["training_file"] == str(project / "data" / "train.jsonl")
    assert spec["local"]["output_dir"] == str(project / "out" / "adapter")
    assert spec["local"]["chat_template"] == str(project / "template.jinja")


def test_a_hub_id_in_a_spec_file_stays_an_id(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, chat_jsonl: Path, hub: _HubServer
) -> None:
    hub.add(MODEL_ID)
    spec_file = _spec_file(
        tmp_path / "project",
        f'provider = "local"\nbase_model = "{MODEL_ID}"\ntraining_file = "{chat_jsonl}"\n[local]\ndevice = "cpu"\n',
    )
    assert _planned_spec(capsys, spec_file)["base_model"] == MODEL_ID


def test_a_missing_folder_in_a_spec_file_is_named_under_the_files_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, chat_jsonl: Path, anytune_home: Path
) -> None:
    spec_file = _spec_file(
        tmp_path / "project",
        f'provider = "local"\nbase_model = "./models/absent"\ntraining_file = "{chat_jsonl}"\n',
    )
    result = run_cli(capsys, "jobs", "create", "-f", str(spec_file))
    assert result.code == 2
    assert "base_model" in result.err and str(tmp_path / "project" / "models" / "absent") in result.err
    assert nothing_recorded(anytune_home)


# -- Hugging Face Jobs: the model is downloaded on the Hub's side ---------------------------------------------


def test_hf_jobs_refuse_a_local_folder(chat_jsonl: Path, tmp_path: Path, anytune_home: Path) -> None:
    folder = model_folder(tmp_path / "model")
    with pytest.raises(NotSupportedError) as info:
        FineTuneJob.create(provider="huggingface", base_model=str(folder), training_file=chat_jsonl)
    assert info.value.field == "base_model" and "Hub model id" in str(info.value)
    assert nothing_recorded(anytune_home)


def test_hf_jobs_offline_refuse_a_create_at_once_but_plan(
    chat_jsonl: Path, anytune_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_TESTtokenAbCdEfGhIjKlMnOpQrStUv0123")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        FineTuneJob.create(provider="huggingface", base_model=MODEL_ID, training_file=chat_jsonl)
    assert time.monotonic() - started < AT_ONCE_S
    assert info.value.field == "base_model" and "HF_HUB_OFFLINE" in str(info.value)
    assert nothing_recorded(anytune_home)
    # A dry run sends nothing, so it needs no network: it still shows the plan.
    plan = FineTuneJob.plan(
        provider="huggingface", base_model=MODEL_ID, training_file=chat_jsonl, hf={"namespace": "acme"}
    )
    assert plan.provider == "huggingface"


# -- OpenAI and Azure OpenAI: the service fine-tunes the models it hosts, by name ---------------------


@pytest.mark.parametrize("provider", ["openai", "azure-openai"])
@pytest.mark.parametrize("given", ["./models/mine", "/opt/models/mine", "~/models/mine", "acme/tiny-chat"])
def test_openai_services_refuse_a_local_path_before_anything_is_recorded(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    chat_jsonl: Path,
    anytune_home: Path,
    workdir: Path,
    network_guard: list[Any],
    provider: str,
    given: str,
) -> None:
    (workdir / "acme" / "tiny-chat").mkdir(parents=True)  # an "org/name" that is a folder here
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "0123456789abcdef0123456789abcdef")
    result = run_cli(
        capsys, "jobs", "create", "-p", provider, "--base-model", given, "--training-file", str(chat_jsonl)
    )
    assert result.code == 2, result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("configuration error: field 'base_model':") and repr(given) in last, result.err
    assert "local provider" in last and "Traceback" not in result.err
    assert nothing_recorded(anytune_home)
    assert network_guard == []  # refused here, not by the service after the uploads
