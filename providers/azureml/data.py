"""The data plane: training files converted to what the task reads, uploaded once, registered.

Each file is normalised (chat JSONL, or prompt/completion for text-completion), uploaded to the
workspace's default blob datastore through azure-storage-blob (same transport as everything else)
and registered as a ``uri_file`` data asset named after its sha256, so the same content is never
uploaded twice: the upload cache remembers it on this machine, and the content-addressed asset name
finds it from any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson

from anytune._boundary import boundary
from anytune._create_once import create_once
from anytune._data.formats import example_format, prompt_completion_messages
from anytune._files import file_digest
from anytune._provider import UploadCache
from anytune._retry import RetryPolicy
from anytune._secrets import register_secret
from anytune.errors import InvalidRequestError, ServiceUnavailableError
from anytune.providers.azureml.errors import NAME
from anytune.providers.azureml.mapping import Task, data_asset_name, slug
from anytune.providers.azureml.workspace import Connection

# -- conversion (pure) -------------------------------------------------------------------------

#: Message keys the service reads; ``weight`` and other anytune-only keys are dropped.
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def _chat_line(obj: dict[str, Any]) -> dict[str, Any]:
    if example_format(obj) == "chat":
        return {"messages": [{k: m[k] for k in MESSAGE_KEYS if k in m} for m in obj["messages"]]}
    return {"messages": prompt_completion_messages(obj["prompt"], obj["completion"])}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _completion_line(obj: dict[str, Any]) -> dict[str, Any]:
    if example_format(obj) == "prompt_completion":
        return {"prompt": obj["prompt"], "completion": obj["completion"]}
    messages = obj["messages"]
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    prompt = "\n\n".join(_text(m.get("content")) for m in messages[:last] if m.get("content"))
    return {"prompt": prompt, "completion": _text(messages[last].get("content"))}


def converted_lines(path: Path, task: Task) -> Iterator[bytes]:
    """The file as the task reads it, one JSONL line at a time (streams; constant memory).

    ``chat-completion`` gets ``{"messages": [...]}`` with only the message keys the service reads
    (``weight`` and other anytune-only keys dropped; prompt/completion becomes a user/assistant
    pair); ``text-completion`` gets ``{"prompt", "completion"}`` (a chat example's last assistant
    message is the completion and the turns before it the prompt).
    """
    convert = _chat_line if task == "chat-completion" else _completion_line
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                yield orjson.dumps(convert(orjson.loads(raw))) + b"\n"


def converted_digest(path: Path, task: Task) -> tuple[int, str]:
    """Size and sha256 of the converted file, computed without writing it (for a dry run)."""
    h = hashlib.sha256()
    size = 0
    for line in converted_lines(path, task):
        h.update(line)
        size += len(line)
    return size, h.hexdigest()


def converted_file(path: Path, task: Task, folder: Path) -> Path:
    """Write the converted file to a private temporary file in ``folder``; the caller removes it."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{os.getpid()}-{time.monotonic_ns()}.jsonl"
    try:
        with tmp.open("wb") as f:
            f.writelines(converted_lines(path, task))
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


# -- upload and registration -------------------------------------------------------------------


def _register_sas(secret: str) -> None:
    register_secret(secret)
    # A SAS token's signature is what grants access; it is what a message would quote.
    for part in secret.lstrip("?").split("&"):
        if part.startswith("sig="):
            register_secret(part[4:])
            register_secret(unquote(part[4:]))


class Uploads:
    """Training files into a workspace: converted, uploaded once, registered as data assets.

    Args:
        conn: the workspace connection.
        store: the upload cache (None: the workspace alone says what is there).
        scratch: where converted files are written before upload.
    """

    def __init__(self, conn: Connection, store: UploadCache | None, scratch: Path) -> None:
        self.conn = conn
        self.store = store
        self.scratch = scratch

    def upload(self, path: Path, task: Task) -> str:
        """Upload (once) and register ``path`` as a data asset; returns the asset's ARM id."""
        ws = self.conn.require_workspace()
        local = converted_file(path, task, self.scratch)
        try:
            size, digest = file_digest(local)
            name = data_asset_name(self.conn.settings.data_prefix, digest)
            if self.store is not None and (known := self.store.find_upload(NAME, ws.scope, digest)):
                # Trust but verify: the asset may have been archived or deleted since.
                if self.asset(name) is not None:
                    return known
                self.store.forget_upload(NAME, ws.scope, digest)
            asset = self.asset(name)
            if asset is None:
                uri = self._put_blob(local, digest, path.name)
                asset = self._register(name, uri, digest, path)
            if self.store is not None:
                self.store.record_upload(NAME, ws.scope, digest, str(asset.id), size)
            return str(asset.id)
        finally:
            with contextlib.suppress(OSError):
                local.unlink()

    def asset(self, name: str) -> Any:
        """The data asset ``name`` (version 1), or None."""
        return self.conn.find(f"look up data asset {name}", lambda: self.conn.ml().data.get(name, version="1"))

    def _register(self, name: str, uri: str, digest: str, source: Path) -> Any:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        data = Data(
            name=name,
            version="1",
            type=AssetTypes.URI_FILE,
            path=uri,
            description=f"anytune upload of {source.name}",
            tags={"anytune.sha256": digest},
        )

        def register() -> Any:
            with boundary(self.conn.errors(f"register data asset {name}")):
                return self.conn.ml().data.create_or_update(data)

        # One attempt; after a failure that may hide a registration (a concurrent or earlier one:
        # the name is content-addressed), the asset is looked up before the error is reported.
        return create_once(
            register,
            lambda: self.asset(name),
            is_ambiguous=lambda exc: isinstance(exc, ServiceUnavailableError | InvalidRequestError),
            retry_on=lambda exc: False,
            policy=RetryPolicy(max_attempts=1),
            what=f"register data asset {name}",
        )

    def _datastore(self) -> tuple[Any, str]:
        """The default datastore and its blob container."""
        with boundary(self.conn.errors("look up the default datastore")):
            store = self.conn.ml().datastores.get_default(include_secrets=True)
        container = str(getattr(store, "container_name", "") or "")
        if not container:
            raise InvalidRequestError(
                f"default datastore {store.name!r} is not a blob container; anytune uploads to blob datastores only",
                provider=NAME,
            )
        return store, container

    def _blob_credential(self, store: Any) -> Any:
        """A SAS token, an account key, or (identity-based datastore) the workspace credential."""
        creds = getattr(store, "credentials", None)
        sas, key = getattr(creds, "sas_token", None), getattr(creds, "account_key", None)
        if sas:
            _register_sas(str(sas))
            return str(sas)
        if key:
            register_secret(str(key))
            return {"account_name": str(store.account_name), "account_key": str(key)}
        return self.conn.credential()

    def _put_blob(self, local: Path, digest: str, filename: str) -> str:
        """Upload to the default datastore; returns the file's ``azureml://`` uri."""
        from azure.storage.blob import BlobServiceClient

        store, container = self._datastore()
        endpoint = getattr(store, "endpoint", None) or "core.windows.net"
        protocol = getattr(store, "protocol", None) or "https"
        account_url = f"{protocol}://{store.account_name}.blob.{endpoint}"
        credential = self._blob_credential(store)
        blob_path = f"anytune/{digest}/{slug(Path(filename).stem, 80)}.jsonl"
        # azure-storage-blob's own retries: a block blob PUT of the same bytes is safe to repeat.
        kwargs: dict[str, Any] = {"retry_total": self.conn.settings.retry_total}
        if self.conn.transport is not None:
            kwargs["transport"] = self.conn.transport
        with boundary(self.conn.errors(f"upload {filename} to datastore {store.name!r}")):
            service = BlobServiceClient(account_url, credential=credential, **kwargs)
            blob = service.get_blob_client(container, blob_path)
            with local.open("rb") as f:
                blob.upload_blob(f, overwrite=True)
        return f"azureml://datastores/{store.name}/paths/{blob_path}"
