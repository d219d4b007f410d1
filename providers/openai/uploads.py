"""The data plane: getting training files to the service, once per account and content.

Small files go through the Files API in one request; large ones through the Uploads API in parts
of at most 64 MiB, sent in parallel straight from disk (:class:`FileSlice`), so memory stays
bounded whatever the file size.  Uploads are content-addressed: the sha256 of each file is kept in
the upload cache with the remote file id, and a file already uploaded to the same account is reused
after checking it still exists.  Azure imports files asynchronously, so a job is created only once
the file is processed (:func:`anytune._waiting.wait_until`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar, cast

from anytune._data.formats import file_format
from anytune._files import FileDigest, file_digests
from anytune._provider import PlannedRequest, UploadCache
from anytune._spec import JobSpec
from anytune._waiting import wait_until
from anytune.errors import InvalidRequestError, ServiceUnavailableError

from .errors import is_ambiguous, openai_module
from .mapping import as_dict, to_number

if TYPE_CHECKING:
    from openai import OpenAI

    from .clients import FamilySettings

__all__ = [
    "MAX_PART_BYTES",
    "FileSlice",
    "Uploader",
    "chat_data_file",
    "needs_chat_conversion",
    "part_ranges",
    "planned_upload_requests",
]

T = TypeVar("T")
logger = logging.getLogger("anytune.providers.openai")

#: The Uploads API takes parts of at most 64 MiB (the SDK's own default part size).
MAX_PART_BYTES = 64 * 1024 * 1024
#: Models that take prompt/completion examples as they are; every other model gets chat.
_LEGACY_COMPLETION_MODELS = ("babbage-002", "davinci-002")


class Retrying(Protocol):
    """Runs ``fn`` under the adapter's read retry policy (SDK exceptions pass untranslated)."""

    def __call__(self, what: str, fn: Callable[[], T], /) -> T: ...


# -- what is sent (pure) ----------------------------------------------------------------------------


def needs_chat_conversion(spec: JobSpec, path: Path) -> bool:
    """Whether ``path`` holds prompt/completion examples for a model that takes chat."""
    return not spec.base_model.startswith(_LEGACY_COMPLETION_MODELS) and file_format(path) == "prompt_completion"


def chat_data_file(spec: JobSpec, path: Path, cache: Path) -> Path:
    """The file to upload: ``path``, or its chat conversion (cached in ``cache`` by content)."""
    if not needs_chat_conversion(spec, path):
        return path
    from anytune._data.convert import convert_prompt_completion

    digest = file_digests(path).sha256
    target = cache / f"{path.stem}-{digest[:16]}.chat.jsonl"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_prompt_completion(path, target)
    return target


def part_ranges(size: int, part_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) of each part; an empty file is one empty part."""
    if size == 0:
        return [(0, 0)]
    return [(start, min(part_bytes, size - start)) for start in range(0, size, part_bytes)]


def planned_upload_requests(
    path: Path, digest: FileDigest, settings: FamilySettings, url: Callable[[str], str]
) -> list[PlannedRequest]:
    """The requests that upload ``path``: one Files API call, or the Uploads API's three steps."""
    if digest.size <= settings.upload_threshold_bytes:
        return [
            PlannedRequest(
                operation=f"POST {url('/files')}",
                body={"purpose": "fine-tune", "file": path.name, "bytes": digest.size, "sha256": digest.sha256},
            )
        ]
    parts = len(part_ranges(digest.size, settings.upload_part_bytes))
    return [
        PlannedRequest(
            operation=f"POST {url('/uploads')}",
            body={"filename": path.name, "purpose": "fine-tune", "bytes": digest.size, "mime_type": "text/jsonl"},
        ),
        PlannedRequest(
            operation=f"POST {url('/uploads/<upload id>/parts')}",
            body={
                "parts": parts,
                "part_bytes": settings.upload_part_bytes,
                "concurrency": settings.upload_concurrency,
            },
        ),
        PlannedRequest(
            operation=f"POST {url('/uploads/<upload id>/complete')}",
            body={"part_ids": f"<{parts} part ids, in file order>", "md5": digest.md5},
        ),
    ]


class FileSlice(io.RawIOBase):
    """A read-only window ``[offset, offset + length)`` of a file, opened on first read.

    Handed to the SDK as the part body: httpx streams it in 64 KiB chunks and can rewind it
    (``seek``) for a retry, so a part never sits in memory whole.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._path, self._offset, self._length = path, offset, length
        self._pos = 0
        self._file: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._length - self._pos)
        if want <= 0:
            return 0
        if self._file is None:
            self._file = self._path.open("rb")
        self._file.seek(self._offset + self._pos)
        got = self._file.readinto(view[:want])
        self._pos += got
        return got

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


# -- sending ----------------------------------------------------------------------------------------


@dataclass
class Uploader:
    """Uploads for one provider and account; SDK exceptions pass (the adapter's boundary translates).

    Attributes:
        provider: the provider's name, for messages and the upload cache.
        client: the SDK client.
        settings: part sizes, concurrency, timeouts.
        scope: the account, as the upload cache keys it.
        store: the upload cache (None: every upload is sent).
        retrying: the adapter's read retry policy.
        wait_for_processing: wait until the service has imported the file (Azure).
        sleep, clock: for that wait.
        file_list_query: paging arguments of the files list beyond ``purpose``, where the service
            defines them (see :attr:`.clients.ClientConfig.file_list_query`).
    """

    provider: str
    client: OpenAI
    settings: FamilySettings
    scope: str
    store: UploadCache | None
    retrying: Retrying
    wait_for_processing: bool
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    file_list_query: Mapping[str, Any] = field(default_factory=dict)

    def upload(self, path: Path, role: str) -> str:
        """Upload ``path`` once per account and content; return its file id."""
        digest = file_digests(path)
        known = self.store.find_upload(self.provider, self.scope, digest.sha256) if self.store else None
        if known is not None:
            if self._reusable(known):
                logger.info("%s: reusing %s for %s (same content)", self.provider, known, path)
                return known
            if self.store is not None:
                self.store.forget_upload(self.provider, self.scope, digest.sha256)
        if digest.size <= self.settings.upload_threshold_bytes:
            file_id = self._upload_small(path)
        else:
            file_id = self._upload_parts(path, digest)
        if self.wait_for_processing:
            self._wait_processed(file_id, path)
        if self.store is not None:
            self.store.record_upload(self.provider, self.scope, digest.sha256, file_id, digest.size)
        logger.info("%s: uploaded %s as %s (%s)", self.provider, path, file_id, role)
        return file_id

    def _reusable(self, file_id: str) -> bool:
        """Whether a recorded upload still exists and is usable on this account."""
        client = self.client
        try:
            info = as_dict(self.retrying("checking a reused file", lambda: client.files.retrieve(file_id)))
        except Exception as exc:
            module = openai_module()
            if module is not None and isinstance(exc, module.NotFoundError):
                return False
            raise
        return str(info.get("status") or "") not in ("error", "deleted", "deleting")

    def _upload_small(self, path: Path) -> str:
        client, timeout = self.client, self.settings.upload_timeout

        def send() -> Any:
            # A fresh handle per attempt: httpx streams it, so memory does not grow with the file.
            with path.open("rb") as handle:
                return client.files.create(
                    file=(path.name, handle, "application/jsonl"), purpose="fine-tune", timeout=timeout
                )

        return str(as_dict(self.retrying(f"uploading {path.name}", send))["id"])

    def _send_parts(self, path: Path, upload_id: str, size: int) -> list[str]:
        """Every part, in parallel from disk; their ids in file order.  The first failure stops the rest."""
        client, s = self.client, self.settings

        def send_part(offset: int, length: int) -> str:
            def attempt() -> Any:
                with FileSlice(path, offset, length) as part:
                    return client.uploads.parts.create(
                        upload_id,
                        data=(path.name, cast("IO[bytes]", part), "application/octet-stream"),
                        timeout=s.upload_timeout,
                    )

            return str(as_dict(self.retrying(f"sending part at byte {offset} of {path.name}", attempt))["id"])

        with ThreadPoolExecutor(max_workers=s.upload_concurrency, thread_name_prefix="anytune-upload") as pool:
            futures: list[Future[str]] = [
                pool.submit(send_part, o, n) for o, n in part_ranges(size, s.upload_part_bytes)
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                for f in futures:
                    f.cancel()
                failed.result()  # raises the part's error
            return [f.result() for f in futures]

    def _upload_parts(self, path: Path, digest: FileDigest) -> str:
        """Uploads API: create, parts in parallel from disk, complete with ordered ids and md5."""
        client = self.client
        upload = as_dict(
            self.retrying(
                f"starting the upload of {path.name}",
                lambda: client.uploads.create(
                    bytes=digest.size, filename=path.name, mime_type="text/jsonl", purpose="fine-tune"
                ),
            )
        )
        upload_id = str(upload["id"])
        try:
            part_ids = self._send_parts(path, upload_id, digest.size)
            return self._complete_upload(upload_id, part_ids, digest, path, to_number(upload.get("created_at")))
        except BaseException:
            self._cancel_upload(upload_id)
            raise

    def _complete_upload(
        self, upload_id: str, part_ids: list[str], digest: FileDigest, path: Path, started: float | None
    ) -> str:
        client = self.client
        ambiguous = False

        def attempt() -> Any:
            nonlocal ambiguous
            try:
                return client.uploads.complete(upload_id, part_ids=part_ids, md5=digest.md5)
            except Exception as exc:
                ambiguous = ambiguous or is_ambiguous(exc)
                raise

        try:
            done = as_dict(self.retrying(f"completing the upload of {path.name}", attempt))
        except Exception as exc:
            module = openai_module()
            if not (
                ambiguous
                and module is not None
                and isinstance(exc, module.APIStatusError)
                and exc.status_code in (400, 409)
            ):
                raise
            # An earlier attempt completed the upload but its answer was lost; there is no GET for
            # uploads, so find the file it produced.
            found = self._find_completed_file(path.name, digest.size, started)
            if found is None:
                raise
            return found
        file_obj = done.get("file") if isinstance(done.get("file"), Mapping) else None
        if not file_obj or not file_obj.get("id"):
            raise InvalidRequestError(
                f"completing the upload of {path.name}: the service returned no file", provider=self.provider
            )
        return str(file_obj["id"])

    def _find_completed_file(self, filename: str, size: int, since: float | None) -> str | None:
        client = self.client
        page = self.retrying(
            "looking up the uploaded file", lambda: client.files.list(purpose="fine-tune", **self.file_list_query)
        )
        for item in (as_dict(f) for f in page.data):
            created = to_number(item.get("created_at")) or 0.0
            if item.get("filename") == filename and item.get("bytes") == size and (since is None or created >= since):
                return str(item["id"])
        return None

    def _cancel_upload(self, upload_id: str) -> None:
        try:
            self.client.uploads.cancel(upload_id)
        except Exception as exc:  # best effort: an abandoned upload expires on its own
            logger.info("%s: could not cancel upload %s: %s", self.provider, upload_id, type(exc).__name__)

    def _wait_processed(self, file_id: str, path: Path) -> None:
        """Wait while the service imports the file (Azure: pending/running -> processed)."""
        client, timeout = self.client, self.settings.file_processing_timeout

        def poll() -> dict[str, Any]:
            info = as_dict(self.retrying("checking the uploaded file", lambda: client.files.retrieve(file_id)))
            if str(info.get("status") or "") in ("error", "failed"):
                detail = info.get("status_details") or "no details"
                raise InvalidRequestError(
                    f"{path.name}: the service could not import the file: {detail}", provider=self.provider
                )
            return info

        def timed_out(_: dict[str, Any]) -> BaseException:
            return ServiceUnavailableError(
                f"{path.name}: still being imported after {timeout:g} s", provider=self.provider
            )

        wait_until(
            poll,
            lambda info: str(info.get("status") or "") not in ("pending", "running"),
            timeout=timeout,
            on_timeout=timed_out,
            initial=1.0,
            factor=1.5,
            maximum=30.0,
            sleep=self.sleep,
            clock=self.clock,
        )
