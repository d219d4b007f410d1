"""The Hugging Face job's own command, run here exactly as the job runs it.

``FineTuneJob.create(provider="huggingface")`` sends a job to the fake Hub; this test takes the
command, environment and secret of that job from the request and runs the command in a subprocess.
Only ``uv`` is replaced, by a shim that resolves nothing: it unpacks the ``anytune[local] @ file://``
wheel onto ``PYTHONPATH`` (so the trainer runs from the shipped wheel, not this checkout) and runs
``python`` with this environment's packages, which are what the job pins. The child talks to the
same fake Hub over loopback HTTP (``HF_ENDPOINT``): it downloads the wheel, the data and the base
model (a tiny model built here), trains for real on CPU, and pushes the adapter. Its output, fed
back as the job's log, gives the provider the metrics and the pushed revision.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("peft")

from anytune import FineTuneJob, JobStatus
from anytune.providers import huggingface as hf
from tests.conftest import FakeClock, chat_example, write_jsonl
from tests.providers.hf_fake import TOKEN, USER, FakeHub
from tests.providers.hf_support import install, provider

BASE = "acme/tiny-chat"

UV_SHIM = """#!{python}
import json, os, sys, tempfile, zipfile

args = sys.argv[1:]
assert args[0] == "run", args
i, requirements = 1, []
while args[i] != "python":
    if args[i] in ("--with", "--python"):
        if args[i] == "--with":
            requirements.append(args[i + 1])
        i += 2
    elif args[i] == "--no-project":
        i += 1
    else:
        sys.exit("uv shim: unexpected option " + args[i])
env = dict(os.environ)
wheel_dir = None
for requirement in requirements:
    if requirement.startswith("anytune[") and " @ file://" in requirement:
        wheel_dir = tempfile.mkdtemp(prefix="wheel-")
        zipfile.ZipFile(requirement.split(" @ file://", 1)[1]).extractall(wheel_dir)
        env["PYTHONPATH"] = wheel_dir + os.pathsep + env.get("PYTHONPATH", "")
with open(env["UV_SHIM_LOG"], "a") as log:
    log.write(json.dumps({{"requirements": requirements, "wheel_dir": wheel_dir}}) + "\\n")
os.execve(sys.executable, [sys.executable, *args[i + 1:]], env)
"""


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Iterator[FakeHub]:
    yield from install(monkeypatch, tmp_path, clock)


def test_the_job_command_trains_on_a_tiny_model_and_pushes_the_adapter(
    hub: FakeHub,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from anytune.local_backend.tiny import build_tiny_model

    texts = [m["content"] for i in range(40) for m in chat_example(i)["messages"]]
    model = build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model",
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=512,
        texts=texts,
    )
    hub.add_repo("model", BASE, {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()})
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(16)])
    valid = write_jsonl(tmp_path / "valid.jsonl", [chat_example(100 + i) for i in range(4)])
    job = FineTuneJob.create(
        provider=provider(hub),
        base_model=BASE,
        training_file=train,
        validation_file=valid,
        lora={"r": 4},
        hyperparameters={"max_steps": 4, "batch_size": 4, "seed": 1},
        local={"logging_steps": 1},
        hf={"flavor": "cpu-basic"},
    )
    sent = hub.job_creates[-1].json()
    output_repo = job.record.output["hub_repo"]

    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "uv").write_text(UV_SHIM.format(python=sys.executable))
    (shims / "uv").chmod(0o755)
    shim_log = tmp_path / "uv-shim.jsonl"
    env = {
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "job-hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # The job's huggingface_hub would push the adapter through Xet (hf_xet is installed); the fake
        # Hub speaks the LFS batch API, which it uses with Xet off (see hf_support).
        "HF_HUB_DISABLE_XET": "1",
        "UV_SHIM_LOG": str(shim_log),
        "OMP_NUM_THREADS": "2",
        **sent["environment"],
        **hub.jobs[job.id.split("/")[1]].secrets,  # the job's secret, as the container gets it
    }
    with hub.serve() as url:
        env["HF_ENDPOINT"] = url
        proc = subprocess.run(sent["command"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # Both uv stages ran: the bootstrap with the Hub client, then the trainer from the shipped wheel.
    stages = [json.loads(line) for line in shim_log.read_text().splitlines()]
    assert [s["requirements"][0] for s in stages] == [hf.hub_client_requirement(), stages[1]["requirements"][0]]
    assert stages[1]["requirements"][0].startswith("anytune[local] @ file://")
    assert set(hf.job_requirements()) <= set(stages[1]["requirements"])
    assert (Path(stages[1]["wheel_dir"]) / "anytune" / "local_backend" / "hf_job.py").is_file()

    # The trainer printed one metric line per logging step, then what it pushed.
    lines = proc.stdout.splitlines()
    assert TOKEN not in proc.stdout + proc.stderr
    metrics = [line for line in lines if line.startswith(hf.METRIC_PREFIX)]
    assert len(metrics) == 4
    pushed = json.loads(next(line for line in lines if line.startswith(hf.RESULT_PREFIX))[len(hf.RESULT_PREFIX) :])
    repo = hub.repos[("model", output_repo)]
    assert repo.private and pushed["hub_repo"] == output_repo and pushed["revision"] == repo.head
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "anytune_spec.json",
        "metrics.jsonl",
        "anytune_result.json",
        "README.md",
    ):
        assert name in repo.files, name
    # Where the Hub keeps them: the weights in LFS, through the LFS batch API and storage (never
    # inline), the text files in git. The fake holds the commit to that (see hf_fake).
    weights = repo.files["adapter_model.safetensors"]
    assert repo.lfs["adapter_model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert "adapter_config.json" not in repo.lfs and "metrics.jsonl" not in repo.lfs
    assert weights in [r.body for r in hub.calls("PUT", rf"^/__storage/model/{output_repo}/")]
    # The job read its wheel and the base model's weights from LFS storage, through the CDN redirect.
    data_repo = hub.repos[("dataset", f"{USER}/anytune-datasets")]
    wheel_path = next(p for p in data_repo.files if p.startswith("anytune/wheels/"))
    base_weights = hub.repos[("model", BASE)].lfs["model.safetensors"]
    for kind, repo_id, sha in (
        ("dataset", data_repo.id, data_repo.lfs[wheel_path]),
        ("model", BASE, base_weights),
    ):
        assert hub.calls("GET", rf"^/__cdn/{kind}/{repo_id}/{sha}$"), (kind, repo_id)
    spec = json.loads(repo.files["anytune_spec.json"])
    assert spec["base_model"] == BASE and spec["training_file"].startswith("hf://datasets/alice/anytune-datasets/")
    assert len(repo.files["metrics.jsonl"].decode().splitlines()) == 4
    assert json.loads(repo.files["anytune_result.json"])["steps"] == 4
    assert b"base_model: acme/tiny-chat" in repo.files["README.md"]

    # The pushed adapter is a standard PEFT adapter for the base model.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "pulled"
    adapter.mkdir()
    for name, data in repo.files.items():
        (adapter / name).write_bytes(data)
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(adapter))

    # Fed back as the job's log, the output gives the provider the metrics and the revision.
    jid = job.id.split("/")[1]
    hub.start(jid)
    hub.log(jid, *lines)
    hub.finish(jid)
    assert job.wait().status is JobStatus.SUCCEEDED
    result = job.result()
    assert (result.hub_repo, result.revision) == (output_repo, repo.head)
    assert [p.step for p in job.metrics()] == [1, 2, 3, 4]
    # The losses the provider reports are the trainer's own, as it pushed them.
    pushed_points = [json.loads(line) for line in repo.files["metrics.jsonl"].decode().splitlines()]
    assert [p.train_loss for p in job.metrics()] == [p["train_loss"] for p in pushed_points]
    assert result.final_metrics is not None and result.final_metrics.valid_loss is not None
