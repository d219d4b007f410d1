"""Benchmark: what ``anytune serve`` adds on top of the model it serves, on the CPU.

    python bench/serve_bench.py [--hidden 256] [--layers 4] [--requests 20] [--new-tokens 32] [--smoke]

One Llama-shaped model and a LoRA adapter built here from a seed, recorded as a succeeded local run
and as a job of the server's one key. Measured in the same run, on the same prompt:

* chat: greedy completions of ``--new-tokens`` tokens at most, one request at a time (the three
  sides interleaved), through the server over HTTP (uvicorn on 127.0.0.1, the ``openai`` SDK as
  the client, whole and streamed) against ``FineTunedModel.load().generate`` called directly (the
  peer: what the server wraps). Latency per request and tokens/s; the ratio is the server's
  overhead;
* job reads: ``GET /v1/fine_tuning/jobs/{id}`` over HTTP, requests/s, against
  ``FineTuneJob.get(ref)`` in process.

Prints a table and one JSON line. Threads: PyTorch's default (every core).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

KEY = "bench-serve-key-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _adapter(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=8, lora_alpha=16))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(out)
    return out


def _succeeded_run(base: Path, adapter: Path, train: Path) -> str:
    """A local run as the worker leaves it when done, with ``adapter`` as its result."""
    from anytune import JobSpec, JobStatus
    from anytune.local_backend.rundir import RunDir
    from anytune.providers.local import LocalProvider

    provider = LocalProvider()
    spec = JobSpec(base_model=str(base), training_file=train, lora={"r": 8, "alpha": 16})
    run = RunDir(provider.runs_dir / provider.job_id_for("serve-bench"))
    run.create(spec, idempotency_key="serve-bench")
    shutil.copytree(adapter, run.adapter_dir)
    run.write_result({"adapter_path": str(run.adapter_dir), "steps": 1})
    run.set_status(JobStatus.SUCCEEDED, step=1, total_steps=1)
    return f"local:{run.id}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(fn: Any, n: int) -> tuple[float, list[Any]]:
    out = []
    start = time.perf_counter()
    for _ in range(n):
        out.append(fn())
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the bench runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hidden, args.layers, args.requests, args.reads, args.new_tokens = 64, 2, 2, 20, 4

    root = Path(tempfile.mkdtemp(prefix="anytune-serve-bench-"))
    os.environ["ANYTUNE_HOME"] = str(root / "home")
    os.environ["ANYTUNE_SERVE_API_KEYS"] = KEY
    try:
        import openai
        import uvicorn

        from anytune import FineTuneJob
        from anytune._serve import KeyRing, ServeOptions, ServeState, create_app
        from anytune._serve.state import JobRow
        from anytune.local_backend.tiny import build_tiny_model

        base = build_tiny_model(
            root / "base", hidden_size=args.hidden, num_layers=args.layers, num_heads=4, num_kv_heads=2
        )
        adapter = _adapter(base, root / "adapter")
        train = root / "train.jsonl"
        train.write_text(json.dumps({"messages": [*MESSAGES, {"role": "assistant", "content": "Paris."}]}) + "\n")
        ref = _succeeded_run(base, adapter, train)

        keys = KeyRing([KEY])
        state = ServeState(root / "home" / "serve")
        owner = keys.owner(KEY)
        assert owner is not None
        job_id = "ftjob-0123456789abcdef01234567"
        state.add_job(JobRow(job_id, owner, ref, "bench", {"model": str(base), "training_file": "file-x"}, 0))
        app = create_app(keys, state, ServeOptions(requests_per_minute=0))
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        client = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        model = f"ft:{job_id}"

        # The peer: the same model, loaded the same way, called directly.
        loaded = FineTuneJob.get(ref).result().load()
        direct_gen = lambda: loaded.generate(MESSAGES, max_new_tokens=args.new_tokens)  # noqa: E731

        def served() -> str:
            answer = client.chat.completions.create(
                model=model,
                messages=MESSAGES,
                max_tokens=args.new_tokens,
                temperature=0,  # type: ignore[arg-type]
            )
            return str(answer.choices[0].message.content)

        def streamed() -> str:
            chunks = client.chat.completions.create(
                model=model,
                messages=MESSAGES,
                max_tokens=args.new_tokens,
                temperature=0,
                stream=True,  # type: ignore[arg-type]
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks)

        served()  # the server loads the model on its first chat: not timed
        direct_gen()
        # Interleaved, one request of each side in turn: a machine that slows down or speeds up
        # during the run weighs on all three alike.
        t_direct = t_served = t_stream = 0.0
        direct_out, served_out, stream_out = [], [], []
        for _ in range(args.requests):
            for fn, outs in ((direct_gen, direct_out), (served, served_out), (streamed, stream_out)):
                spent, got = _timed(fn, 1)
                outs.extend(got)
                if fn is direct_gen:
                    t_direct += spent
                elif fn is served:
                    t_served += spent
                else:
                    t_stream += spent
        if not (direct_out[0] == served_out[0] == stream_out[0]):
            print(f"answers differ: {direct_out[0]!r} {served_out[0]!r} {stream_out[0]!r}", file=sys.stderr)
            return 1
        tokens = len(loaded.tokenizer(direct_out[0], add_special_tokens=False)["input_ids"]) * args.requests

        t_reads_http, _ = _timed(lambda: client.fine_tuning.jobs.retrieve(job_id), args.reads)
        t_reads_direct, _ = _timed(lambda: FineTuneJob.get(ref).record, args.reads)
        server.should_exit = True
        thread.join(timeout=10)
        state.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result = {
        "bench": "serve",
        "model": {"hidden": args.hidden, "layers": args.layers},
        "requests": args.requests,
        "new_tokens": args.new_tokens,
        "chat_ms_direct": round(1000 * t_direct / args.requests, 2),
        "chat_ms_served": round(1000 * t_served / args.requests, 2),
        "chat_ms_streamed": round(1000 * t_stream / args.requests, 2),
        "tokens_per_s_direct": round(tokens / t_direct, 1),
        "tokens_per_s_served": round(tokens / t_served, 1),
        "tokens_per_s_streamed": round(tokens / t_stream, 1),
        "overhead_served": round(t_served / t_direct, 3),
        "overhead_streamed": round(t_stream / t_direct, 3),
        "job_reads_per_s_http": round(args.reads / t_reads_http, 1),
        "job_reads_per_s_direct": round(args.reads / t_reads_direct, 1),
    }
    print(
        f"chat, {args.requests} requests of <= {args.new_tokens} tokens (hidden {args.hidden}, {args.layers} layers):"
    )
    for side in ("direct", "served", "streamed"):
        print(f"  {side:9} {result[f'chat_ms_{side}']:9.2f} ms/request  {result[f'tokens_per_s_{side}']:8.1f} tokens/s")
    print(f"  server overhead: {result['overhead_served']}x whole, {result['overhead_streamed']}x streamed")
    print(
        f"job reads: {result['job_reads_per_s_http']} requests/s over HTTP, "
        f"{result['job_reads_per_s_direct']} FineTuneJob.get/s in process"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
