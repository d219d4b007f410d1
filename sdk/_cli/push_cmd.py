"""``anytune push``: publish a succeeded local job's adapter to a Hugging Face Hub model repo."""

from __future__ import annotations

from typing import Annotated

import typer

from anytune import FineTuneJob
from anytune._cli._common import JsonOpt, ProfileOpt, err, lit, out, print_json, safe
from anytune._job import require_succeeded
from anytune._types import check_hub_repo_id


def push(
    ref: Annotated[str, typer.Argument(help="Job reference (PROVIDER:ID) of a succeeded job.", show_default=False)],
    repo: Annotated[
        str, typer.Option("--repo", help="Hub model repo to create or update: OWNER/NAME.", show_default=False)
    ],
    public: Annotated[
        bool, typer.Option("--public", help="Make a new repo public (default private; an existing one keeps its own).")
    ] = False,
    profile: ProfileOpt = None,
    json: JsonOpt = False,
) -> None:
    """Publish a succeeded job's adapter, tokenizer, metrics and a model card to the Hub, in one commit.

    The token comes from HF_TOKEN, else from `hf auth login`; HF_ENDPOINT names another Hub.
    """
    check_hub_repo_id(repo)  # before anything is read or sent
    job = FineTuneJob.get(ref, profile=profile)
    require_succeeded(job.record, "pushed")
    pushed = job.result().push_to_hub(repo, private=not public)
    url = str(pushed.extra.get("hub_url") or pushed.hub_repo)
    if json:
        print_json(
            {
                "job": job.ref,
                "repo": pushed.hub_repo,
                "url": url,
                "revision": pushed.revision,
                "files": pushed.extra.get("pushed_files", []),
            }
        )
        return
    files = pushed.extra.get("pushed_files") or []
    err.print(
        f"pushed {len(files)} files of {lit(job.ref)} to {lit(pushed.hub_repo)} at revision {lit(pushed.revision)}"
    )
    out.print(safe(url), markup=False)
    out.print(safe(pushed.revision), markup=False)
