"""An in-memory Hugging Face Hub (repos, commits, files, LFS storage, Jobs API) at the HTTP level.

The real huggingface_hub client talks to it: in the test process through
``huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(...)))``,
and from a subprocess (the job's own command) through :meth:`FakeHub.serve`, a loopback HTTP server
given to the child as ``HF_ENDPOINT``.  Answers follow the shapes huggingface_hub parses
(``JobInfo``'s camelCase fields, SSE log events, preupload / ndjson commit, resolve headers) and its
error conventions (``X-Error-Code``, ``X-Error-Message``, ``{"error": ...}`` bodies).

Files are held to the Hub's rules, not to what a client chooses to send:

* preupload decides ``regular`` or ``lfs`` from the path, the size and the 512-byte sample the client
  sends (:func:`upload_mode`): a path the repo's ``.gitattributes`` tracks with LFS, a file of 10 MiB
  or more, or a binary sample means LFS. New repos get the Hub's default ``.gitattributes``.
* LFS content goes through the LFS batch API (``{repo}.git/info/lfs/objects/batch``): a signed
  storage URL to PUT to (one, or one per part with ``chunk_size`` when :attr:`FakeHub.multipart_chunk_size`
  is set), then the verify call. Storage refuses a request carrying the Hub token (a signed URL is
  the only credential, as on S3). An object the repo already holds gets no actions.
* The ndjson commit takes an ``lfsFile`` only for a verified object of that sha256 and size, and
  refuses a ``file`` sent inline whose content preupload sends to LFS, with the Hub's error
  ("Your push was rejected because it contains binary files" / "files larger than 10 MiB").
  An LFS file's path is added to ``.gitattributes`` unless a pattern there covers it already.
* A download of an LFS file answers as the Hub does: a 302 to a signed CDN URL on another origin,
  ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``.
* Xet is not spoken: its token routes answer 501. huggingface_hub 2.x uploads every LFS-mode file
  through Xet whenever the ``hf_xet`` package is installed (it asks the server nothing first), so
  the tests set ``HF_HUB_DISABLE_XET`` (see ``hf_support``), which makes it take the LFS batch path.

Jobs do not run by themselves: a test moves them with :meth:`start`, :meth:`log` and :meth:`finish`.
Faults (:meth:`fail`) answer a status, raise a transport error, drop a log stream midway, or end a
log replay early without an error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import http.server
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx2

from tests.loopback import LoopbackServer, serving

TOKEN = "hf_TESTtokenAbCdEfGhIjKlMnOpQrStUv0123"
USER = "alice"
FLAVORS = ("cpu-basic", "cpu-upgrade", "t4-small", "a10g-small", "a10g-large", "a100-large", "h200")
SHA1_EMPTY = "0" * 40
#: huggingface_hub's ``constants.INFERENCE_ENDPOINTS_ENDPOINT`` host (``/v2/endpoint/{namespace}[/{name}]``).
ENDPOINTS_HOST = "api.endpoints.huggingface.cloud"
#: Inference Endpoints hardware the fake offers: (vendor, region, accelerator, type, size, $/h, status), the
#: ``/v2/provider/{namespace}`` catalog ``list_inference_endpoints_hardware`` reads. Prices: the pricing page.
HARDWARE = (
    ("aws", "us-east-1", "gpu", "nvidia-t4", "x1", 0.5, "available"),
    ("aws", "us-east-1", "gpu", "nvidia-l4", "x1", 0.8, "available"),
    ("aws", "us-east-1", "gpu", "nvidia-a10g", "x1", 1.0, "available"),
    ("aws", "us-east-1", "cpu", "intel-spr", "x2", 0.067, "available"),
    ("gcp", "us-central1", "gpu", "nvidia-l4", "x1", 0.7, "available"),
)
#: The ``model.image`` variants of the API (huggingface_hub's CLI ``ENGINE_IMAGE_KEYS`` and the managed ones).
IMAGE_VARIANTS = frozenset(
    {"huggingface", "huggingfaceNeuron", "custom", "hfServe", "llamacpp", "sGLang", "tei", "tgi", "tgiNeuron", "vLLM"}
    | {"vLLMNeuron"}
)
#: What each part of a create body may hold (the API refuses unknown fields).
_CREATE_KEYS = {
    "": {"compute", "model", "name", "provider", "type", "privateService", "route", "cacheHttpResponses", "tags"},
    "compute": {"accelerator", "instanceSize", "instanceType", "scaling"},
    "scaling": {"maxReplica", "minReplica", "scaleToZeroTimeout", "measure"},
    "model": {"framework", "repository", "revision", "image", "task", "command", "args", "env", "secrets"},
    "provider": {"region", "vendor"},
}

#: Files of this size or more are large files: the Hub refuses them in git ("Your push was rejected
#: because it contains files larger than 10 MiB", the commit endpoint's answer quoted in
#: huggingface/huggingface_hub#2666), and huggingface_hub's git-based ``Repository`` tracked files of
#: ``size_in_mb >= 10`` with LFS (``auto_track_large_files``, repository.py before 1.0).
LFS_THRESHOLD = 10 * 1024 * 1024

#: Bytes text may hold; a sample with any other byte is binary. huggingface_hub's ``is_binary_file``
#: (repository.py before 1.0), the check its git-based uploads used to put binary files in LFS, which
#: the Hub requires ("Your push was rejected because it contains binary files", huggingface_hub#825).
_TEXT_BYTES = bytes(sorted({7, 8, 9, 10, 12, 13, 27} | set(range(0x20, 0x100)) - {0x7F}))

#: The LFS patterns of the ``.gitattributes`` the Hub writes in a new model repo's first commit: 35
#: lines, ``*.zip``, ``*.zst`` and ``*tfevents*`` last (commit pages on huggingface.co that add to it
#: start at line 36, e.g. unum-cloud/uform-gen commit 43ece56). Neither ``*.whl`` nor ``*.jsonl`` is
#: there: a wheel goes to LFS for being binary, a data file for being large.
MODEL_LFS_PATTERNS = [
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
]
#: A new dataset repo's: the model list with ``*.lz4`` and ``*.mds``, then audio, image and video files.
_MEDIA_PATTERNS = (
    "*.pcm *.sam *.raw *.aac *.flac *.mp3 *.ogg *.wav *.bmp *.gif *.png *.tiff *.jpg *.jpeg *.webp *.mp4 *.webm"
)
DATASET_LFS_PATTERNS = [
    *MODEL_LFS_PATTERNS[:10],
    "*.lz4",
    "*.mds",
    *MODEL_LFS_PATTERNS[10:],
    *_MEDIA_PATTERNS.split(" "),
]
_LFS_ATTRIBUTES = " filter=lfs diff=lfs merge=lfs -text"


def git_oid(data: bytes) -> str:
    """The git blob sha1 huggingface_hub computes for a regular file (its ``_local_oid``)."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git holds in place of an LFS file (git-lfs spec v1)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_patterns(gitattributes: str) -> list[str]:
    """The patterns a ``.gitattributes`` gives the ``filter=lfs`` attribute."""
    found: list[str] = []
    for line in gitattributes.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            if "filter=lfs" in words[1:]:
                found.append(words[0])
            elif any(w in ("-filter", "!filter") for w in words[1:]) and words[0] in found:
                found.remove(words[0])
    return found


def _glob(pattern: str) -> re.Pattern[str]:
    """A gitattributes pattern as a regex: ``*`` and ``?`` stay within a folder, ``**/`` spans folders."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("[[:space:]]", i):
            out, i = out + r"\s", i + len("[[:space:]]")
        elif pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out)


def is_tracked(path: str, patterns: Sequence[str]) -> bool:
    """Whether a pattern covers ``path``: one without a slash matches the file name at any depth."""
    name = path.rsplit("/", 1)[-1]
    return any(_glob(p.lstrip("/")).fullmatch(path if "/" in p.rstrip("/") else name) is not None for p in patterns)


def upload_mode(path: str, size: int, sample: bytes, patterns: Sequence[str]) -> tuple[str, str | None]:
    """How the Hub's preupload stores a file: ``("lfs", why)`` or ``("regular", None)``.

    ``why``: ``"tracked"`` (a ``.gitattributes`` LFS pattern covers the path), ``"large"`` (10 MiB or
    more), ``"binary"`` (the sample holds a byte text does not).
    """
    if is_tracked(path, patterns):
        return "lfs", "tracked"
    if size >= LFS_THRESHOLD:
        return "lfs", "large"
    if sample.translate(None, _TEXT_BYTES):
        return "lfs", "binary"
    return "regular", None


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Repo:
    kind: str
    id: str
    private: bool
    #: Every file's content, LFS files included (what a download gives).
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    gated: bool = False
    #: Branch or tag names a dataset repo answers for besides ``main`` and its commits.
    branches: set[str] = field(default_factory=set)
    #: The files stored as LFS pointers: path -> sha256 of the content.
    lfs: dict[str, str] = field(default_factory=dict)
    #: This repo's LFS storage, by sha256: what was PUT (checked when a commit points at it).
    objects: dict[str, bytes] = field(default_factory=dict)
    #: The objects the client verified after uploading (the batch answer's verify action).
    verified: set[str] = field(default_factory=set)
    #: path -> the upload mode the last preupload answered (until the next commit).
    answered: dict[str, str] = field(default_factory=dict)
    #: The LFS patterns of the repo's ``.gitattributes``. The Hub writes its default one in a new repo's
    #: first commit; the fake keeps its patterns here instead of among :attr:`files` (so that a test's
    #: listing of a repo shows what was pushed). A ``.gitattributes`` in :attr:`files` replaces them.
    attributes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.attributes:
            self.attributes = list(DATASET_LFS_PATTERNS if self.kind == "dataset" else MODEL_LFS_PATTERNS)

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else SHA1_EMPTY

    def patterns(self, files: dict[str, bytes] | None = None) -> list[str]:
        """The LFS patterns in force: of the ``.gitattributes`` in ``files`` or the repo, else the default."""
        text = (files or {}).get(".gitattributes", self.files.get(".gitattributes"))
        return self.attributes if text is None else lfs_patterns(text.decode("utf-8", "replace"))

    def track(self, path: str) -> None:
        """Add ``path`` to the LFS patterns, as the commit endpoint does for an LFS file no pattern covers."""
        if ".gitattributes" in self.files:
            self.files[".gitattributes"] = (
                self.files[".gitattributes"].rstrip(b"\n")
                + ("\n" + path.replace(" ", "[[:space:]]") + _LFS_ATTRIBUTES + "\n").encode()
            )
        else:
            self.attributes.append(path)

    def store(self, path: str, data: bytes) -> None:
        """Put a file in as the Hub would hold it (seeding a repo): LFS when preupload would say so."""
        self.files[path] = data
        mode, _ = upload_mode(path, len(data), data[:512], self.patterns())
        if mode == "lfs" and data:
            sha = hashlib.sha256(data).hexdigest()
            self.lfs[path], self.objects[sha] = sha, data
            self.verified.add(sha)
        else:
            self.lfs.pop(path, None)


@dataclass
class Job:
    id: str
    namespace: str
    body: dict[str, Any]
    secrets: dict[str, str]
    created_at: datetime
    stage: str = "SCHEDULING"
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    logs: list[tuple[datetime, str]] = field(default_factory=list)


@dataclass
class Endpoint:
    """An Inference Endpoint: the create body (secrets apart) and its state."""

    namespace: str
    body: dict[str, Any]
    secrets: dict[str, str]
    created_at: datetime
    id: str
    state: str = "pending"
    message: str | None = None
    updated_at: datetime | None = None
    #: Reads left before a deleted endpoint answers 404 (a delete takes a while).
    deleting: int | None = None

    @property
    def name(self) -> str:
        return str(self.body["name"])

    @property
    def url(self) -> str:
        provider = self.body["provider"]
        return f"https://{self.id}.{provider['region']}.{provider['vendor']}.endpoints.huggingface.cloud"


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    times: int = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    exception: type[Exception] | None = None
    after: bool = False  # apply the request first, then fail: the caller cannot know it worked
    drop_after: int | None = None  # a 200 stream cut after this many SSE events
    end_after: int | None = None  # a 200 answer that ends cleanly, early, after this many SSE events


class _DroppedStream(httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")


#: A route: the request, the authenticated user, the path's match.
Handler = Callable[["Recorded", str, "re.Match[str]"], httpx2.Response]


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, code: str | None = None) -> httpx2.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return httpx2.Response(status, json={"error": message}, headers=headers)


def _storage_error(status: int, code: str, message: str) -> httpx2.Response:
    """An S3 error: the signed storage URLs are S3's, and S3 answers in XML."""
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return httpx2.Response(status, content=body.encode(), headers={"Content-Type": "application/xml"})


def _rejected(what: str, path: str) -> httpx2.Response:
    """The commit endpoint's refusal of content git must not hold, in the Hub's words."""
    store = "large files" if "larger" in what else "binary files"
    return _error(
        400,
        f"Your push was rejected because it contains {what}. Please use https://huggingface.co/docs/hub/xet "
        f"to store {store}. See also: https://hf.co/docs/hub/repositories-getting-started#terminal "
        f"Offending files: - {path} (ref: refs/heads/main)",
    )


def _missing_object(path: str) -> httpx2.Response:
    return _error(
        400,
        "Your push was rejected because an LFS pointer pointed to a file that does not exist. For instance, "
        f"this can happen if you used git push --no-verify to push your changes. Offending file: - {path}",
    )


def _content(value: dict[str, Any]) -> bytes:
    """A ``file`` line's content: base64 (huggingface_hub) or text (``encoding: utf-8``)."""
    content = value.get("content", "")
    return content.encode() if value.get("encoding") == "utf-8" else base64.b64decode(content)


def _lfs_json(payload: Any, status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, json=payload, headers={"Content-Type": "application/vnd.git-lfs+json"})


def _other_origin(origin: str) -> str:
    """A CDN's origin: another host (``localhost`` for a loopback server, which it also reaches)."""
    parts = urlsplit(origin)
    host = "localhost" if parts.hostname == "127.0.0.1" else f"cdn-lfs.{parts.hostname}"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


_NO_XET = (
    "this fake Hub does not speak Xet: set HF_HUB_DISABLE_XET=1 so that huggingface_hub uploads through the "
    "LFS batch API (tests.providers.hf_support does, in the test process)"
)


class FakeHub:
    """See the module docstring. ``clock`` gives the time of creations, stages and log lines."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        #: Jobs move on by themselves, one stage per read (SCHEDULING, RUNNING, then COMPLETED with
        #: a metric and the trainer's result line), as a real job does over time.
        self.auto_run = False
        self.requests: list[Recorded] = []
        self.repos: dict[tuple[str, str], Repo] = {}
        self.jobs: dict[str, Job] = {}
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        #: Endpoints move on by themselves, one state per read (pending, initializing, running).
        self.auto_deploy = False
        #: Reads of a deleted endpoint that still find it (then 404).
        self.delete_lag = 1
        #: Chat completions answered: (endpoint name, request body).
        self.chats: list[tuple[str, dict[str, Any]]] = []
        self.faults: list[Fault] = []
        self.tokens = {TOKEN: USER}
        self.payment_method = True
        #: Whether a request without a token may read public dataset repos (info, tree, downloads), as
        #: on the Hub; off, every request needs a token (the Jobs tests' Hub).
        self.anonymous_reads = False
        #: LFS objects larger than this are uploaded in parts of this size (the Hub's ``multipart``
        #: transfer: one signed URL per part, then a completion call); None: one PUT each.
        self.multipart_chunk_size: int | None = None
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._secret = hashlib.sha256(repr(id(self)).encode()).hexdigest()
        #: Multipart uploads in progress: (kind, repo, oid) -> part number -> bytes.
        self._parts: dict[tuple[str, str, str], dict[int, bytes]] = {}

    # -- test controls ---------------------------------------------------------------------------
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc)

    def add_repo(
        self,
        kind: str,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        private: bool = False,
        gated: bool = False,
    ) -> Repo:
        """A repo holding ``files``, each stored as the Hub would store it: binary, large and
        LFS-tracked files as LFS objects (served through the CDN redirect)."""
        repo = Repo(kind, repo_id, private, gated=gated)
        if files and ".gitattributes" in files:
            repo.store(".gitattributes", files[".gitattributes"])
        for path, data in (files or {}).items():
            repo.store(path, data)
        if files:
            repo.commits.append(hashlib.sha1(repr(sorted(files)).encode()).hexdigest())
        self.repos[(kind, repo_id)] = repo
        return repo

    def fail(self, method: str, pattern: str, **kwargs: Any) -> Fault:
        fault = Fault(method, re.compile(pattern), **kwargs)
        self.faults.append(fault)
        return fault

    def start(self, job_id: str) -> None:
        job = self.jobs[job_id]
        job.stage, job.started_at = "RUNNING", self.now()

    def log(self, job_id: str, *lines: str) -> None:
        job = self.jobs[job_id]
        job.logs.extend((self.now(), line) for line in lines)

    def finish(self, job_id: str, stage: str = "COMPLETED", message: str | None = None) -> None:
        job = self.jobs[job_id]
        job.stage, job.message, job.finished_at = stage, message, self.now()

    def calls(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    @property
    def job_creates(self) -> list[Recorded]:
        return self.calls("POST", r"^/api/jobs/[^/]+$")

    # -- transport -------------------------------------------------------------------------------
    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle)

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=self.transport(), follow_redirects=True)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        url = urlsplit(str(request.url))
        path = unquote(url.path)
        record = Recorded(
            request.method,
            str(request.url),
            path,
            parse_qsl(url.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        with self._lock:
            self.requests.append(record)
            fault = next(
                (f for f in self.faults if f.times > 0 and f.method == request.method and f.pattern.search(path)), None
            )
            if fault is not None:
                answer = self._apply(fault, record)
                if answer is not None:
                    return answer
            return self._route(record)

    def _apply(self, fault: Fault, record: Recorded) -> httpx2.Response | None:
        """What an injected fault answers (None: the request goes on to its route)."""
        fault.times -= 1
        if fault.after:
            self._route(record)
        if fault.exception is not None:
            raise fault.exception("fault injected by the test")
        if fault.status is not None:
            payload = fault.body if fault.body is not None else {"error": f"HTTP {fault.status}"}
            return httpx2.Response(fault.status, json=payload, headers=fault.headers)
        if fault.drop_after is not None or fault.end_after is not None:
            return self._cut_short(record, fault)
        return None

    def _cut_short(self, record: Recorded, fault: Fault) -> httpx2.Response:
        """The routed answer's first SSE events: then a dropped connection, or a clean early end."""
        events = [e + b"\n\n" for e in self._route(record).content.split(b"\n\n") if e]
        headers = {"Content-Type": "text/event-stream"}
        if fault.drop_after is not None:
            return httpx2.Response(200, headers=headers, stream=_DroppedStream(events[: fault.drop_after]))
        return httpx2.Response(200, headers=headers, content=b"".join(events[: fault.end_after]))

    # -- routing ---------------------------------------------------------------------------------
    def _user(self, record: Recorded) -> str | None:
        auth = record.headers.get("authorization", "")
        return self.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None

    def _routes(self) -> list[tuple[str | None, str, Handler]]:
        """(method or None for any, path regex, handler), tried in order; the path must match whole."""
        repo = r"/api/(model|dataset)s"
        return [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", lambda r, user, m: self._create_repo(r, user)),
            ("POST", r"/api/validate-yaml", lambda r, user, m: httpx2.Response(200, json={})),
            (None, rf"{repo}/(.+?)/auth-check", lambda r, user, m: self._auth_check(m[1], m[2], user)),
            ("POST", rf"{repo}/(.+?)/preupload/([^/]+)", lambda r, user, m: self._preupload(m[1], m[2], r)),
            (None, rf"{repo}/(.+?)/xet-(?:read|write)-token/.*", lambda r, user, m: _error(501, _NO_XET)),
            (None, rf"{repo}/(.+?)/commit/([^/]+)", lambda r, user, m: self._commit(m[1], m[2], r)),
            (
                None,
                rf"{repo}/([^/]+/[^/]+)(?:/revision/([^/]+))?",
                lambda r, user, m: self._dataset_refusal(m[1], m[2], m[3], user) or self._repo_info(m[1], m[2]),
            ),
            (
                "GET",
                rf"{repo}/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?",
                lambda r, user, m: self._tree(m[1], m[2], m[3], m[4] or "", r, user),
            ),
            (
                None,
                r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)",
                lambda r, user, m: (
                    self._dataset_refusal("dataset" if m[1] else "model", m[2], m[3], user, files=True)
                    or self._resolve("dataset" if m[1] else "model", m[2], m[4], r)
                ),
            ),
            (
                "POST",
                r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)",
                lambda r, user, m: (self._lfs_batch if m[3] == "batch" else self._lfs_verify)(
                    "dataset" if m[1] else "model", m[2], r
                ),
            ),
            ("POST", r"/api/jobs/([^/]+)", lambda r, user, m: self._create_job(m[1], r, user)),
            (None, r"/api/jobs/([^/]+)", lambda r, user, m: self._list_jobs(m[1], r)),
            (None, r"/api/jobs/([^/]+)/([^/]+)(/logs|/cancel)?", self._job_route),
        ]

    def _route(self, r: Recorded) -> httpx2.Response:
        host = urlsplit(r.url).hostname or ""
        if host == ENDPOINTS_HOST:
            return self._endpoints_api(r)
        if host.endswith(".endpoints.huggingface.cloud"):
            return self._endpoint_serving(r, host)
        if r.path == "/api/agent-harnesses":
            return httpx2.Response(200, json={"standardEnvVars": [], "harnesses": {}})
        # Signed URLs (storage, CDN, multipart completion): the signature is the credential.
        signed: list[tuple[tuple[str, ...], str, Callable[[Recorded, re.Match[str]], httpx2.Response]]] = [
            (("PUT",), r"/__storage/(model|dataset)/([^/]+/[^/]+)/([0-9a-f]{64})(?:/part/(\d+))?", self._storage_put),
            (("GET", "HEAD"), r"/__cdn/(model|dataset)/([^/]+/[^/]+)/([0-9a-f]{64})", self._cdn),
            (
                ("POST",),
                r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/complete_multipart/([0-9a-f]{64})",
                self._complete_multipart,
            ),
        ]
        for methods, pattern, signed_handler in signed:
            if r.method in methods and (found := re.fullmatch(pattern, r.path)) is not None:
                return signed_handler(r, found)
        user = self._user(r)
        if user is None and self.anonymous_reads and r.method in ("GET", "HEAD") and "/api/jobs" not in r.path:
            user = ""  # anonymous: public dataset repos only (see _dataset_refusal)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        for method, pattern, handler in self._routes():
            if method in (None, r.method) and (found := re.fullmatch(pattern, r.path)) is not None:
                return handler(r, user, found)
        return _error(404, f"no route for {r.method} {r.path}")

    def _whoami(self, r: Recorded, user: str, m: re.Match[str]) -> httpx2.Response:
        return httpx2.Response(
            200,
            json={
                "type": "user",
                "name": user,
                "fullname": "Alice",
                "orgs": [{"name": "acme"}],
                "auth": {"type": "access_token"},
            },
        )

    def _job_route(self, r: Recorded, user: str, m: re.Match[str]) -> httpx2.Response:
        job = self.jobs.get(m[2])
        if job is None or job.namespace != m[1]:
            return _error(404, "Job not found")
        if m[3] == "/logs":
            return self._logs(job)
        if m[3] == "/cancel" and r.method == "POST":
            if job.stage not in ("COMPLETED", "ERROR", "CANCELED", "DELETED"):
                self.finish(job.id, "CANCELED")
            return httpx2.Response(200, json={})
        if self.auto_run:
            self._run_on(job)
        return httpx2.Response(200, json=self._job_json(job))

    def _run_on(self, job: Job) -> None:
        """One stage further for :attr:`auto_run`."""
        if job.stage == "SCHEDULING":
            self.start(job.id)
        elif job.stage == "RUNNING":
            words = [str(w) for w in (job.body.get("command") or []) + (job.body.get("arguments") or [])]
            repo = next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--output-repo"), None)
            metric = {"step": 1, "train_loss": 1.0, "epoch": 1.0, "time": _iso(self.now())}
            result = {"hub_repo": repo, "revision": "abc123", "result": {"steps": 1}}
            self.log(job.id, "ANYTUNE_METRIC " + json.dumps(metric), "ANYTUNE_RESULT " + json.dumps(result))
            self.finish(job.id)

    def _create_repo(self, r: Recorded, user: str) -> httpx2.Response:
        body = r.json()
        kind = body.get("type") or "model"
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        url = f"https://huggingface.co/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
        if (kind, repo_id) in self.repos:
            return httpx2.Response(409, json={"error": "You already created this repo", "url": url})
        self.repos[(kind, repo_id)] = Repo(kind, repo_id, body.get("visibility", "public") == "private")
        return httpx2.Response(200, json={"url": url, "name": repo_id})

    def _auth_check(self, kind: str, repo_id: str, user: str) -> httpx2.Response:
        repo = self.repos.get((kind, repo_id))
        if repo is None or (repo.private and not repo_id.startswith(f"{user}/")):
            return _error(404, "Repository not found", "RepoNotFound")
        if repo.gated:
            return _error(403, "Access to this model is restricted", "GatedRepo")
        return httpx2.Response(200, json={})

    def _repo(self, kind: str, repo_id: str) -> Repo | None:
        return self.repos.get((kind, repo_id))

    # -- files: preupload, LFS storage, commit, download -------------------------------------------
    def _preupload(self, kind: str, repo_id: str, r: Recorded) -> httpx2.Response:
        """Regular or LFS for each file, from what the client says of it: path, size, 512-byte sample."""
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        body = r.json()
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list):
            return _error(400, "`files` must be an array of {path, size, sample}")
        attributes = body.get("gitAttributes")
        patterns = lfs_patterns(attributes) if isinstance(attributes, str) else repo.patterns()
        answers = []
        for f in files:
            path, size, sample = (f.get(k) for k in ("path", "size", "sample")) if isinstance(f, dict) else (0, 0, 0)
            try:
                raw = base64.b64decode(sample, validate=True) if isinstance(sample, str) else None
            except binascii.Error:
                raw = None
            if not isinstance(path, str) or not isinstance(size, int) or size < 0 or raw is None:
                return _error(400, f"invalid preupload entry {f!r}: expected path, size and a base64 sample")
            if len(raw) > min(size, 512):
                return _error(
                    400, f"{path}: the sample is the file's first 512 bytes at most, and no more than its size"
                )
            mode, _ = upload_mode(path, size, raw, patterns)
            repo.answered[path] = mode
            oid = (repo.lfs.get(path) or git_oid(repo.files[path])) if path in repo.files else None
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return httpx2.Response(200, json={"files": answers, "commitOid": repo.head})

    def _sign(self, path: str) -> str:
        return hashlib.sha256(f"{self._secret}:{path}".encode()).hexdigest()[:40]

    def _signed(self, origin: str, path: str) -> str:
        return f"{origin}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={self._sign(path)}"

    def _lfs_batch(self, kind: str, repo_id: str, r: Recorded) -> httpx2.Response:
        """The git-lfs batch API (upload): where to PUT each object, or nothing for one already stored.

        The client offers ``transfers`` (huggingface_hub: ``basic``, ``multipart``); ``xet`` is never
        chosen here.
        """
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        if "application/vnd.git-lfs+json" not in r.headers.get("accept", ""):
            return _lfs_json({"message": "Accept: application/vnd.git-lfs+json is required"}, 406)
        body = r.json()
        transfers = body.get("transfers") or ["basic"]
        if body.get("operation") != "upload" or body.get("hash_algo", "sha256") != "sha256":
            return _lfs_json({"message": "only sha256 uploads are accepted here"}, 422)
        objects, chosen = [], "basic"
        for obj in body.get("objects") or []:
            oid, size = obj.get("oid"), obj.get("size")
            if not (
                isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int) and size >= 0
            ):
                return _lfs_json({"message": f"invalid object {obj!r}"}, 422)
            if oid in repo.verified and len(repo.objects[oid]) == size:
                objects.append({"oid": oid, "size": size})  # already stored: no actions
                continue
            verify = {"href": f"{r.origin}/{self._git_prefix(kind, repo_id)}/info/lfs/objects/verify", "header": {}}
            chunk = self.multipart_chunk_size
            if chunk and size > chunk and "multipart" in transfers:
                chosen = "multipart"
                storage = f"/__storage/{kind}/{repo_id}/{oid}"
                header = {
                    str(n): self._signed(r.origin, f"{storage}/part/{n}") for n in range(1, math.ceil(size / chunk) + 1)
                }
                header["chunk_size"] = str(chunk)
                complete = f"/{self._git_prefix(kind, repo_id)}/info/lfs/complete_multipart/{oid}"
                upload = {"href": self._signed(r.origin, complete), "header": header}
            else:
                upload = {"href": self._signed(r.origin, f"/__storage/{kind}/{repo_id}/{oid}")}
            objects.append(
                {"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload, "verify": verify}}
            )
        return _lfs_json({"transfer": chosen, "objects": objects})

    @staticmethod
    def _git_prefix(kind: str, repo_id: str) -> str:
        return f"{'datasets/' if kind == 'dataset' else ''}{repo_id}.git"

    def _signed_request(self, r: Recorded) -> httpx2.Response | None:
        """S3's checks of a presigned request: the signature, and no second credential beside it."""
        if dict(r.query).get("X-Amz-Signature") != self._sign(r.path):
            return _storage_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match")
        if "authorization" in r.headers:
            return _storage_error(
                400, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter..."
            )
        return None

    def _storage_put(self, r: Recorded, m: re.Match[str]) -> httpx2.Response:
        """A PUT to a signed storage URL: a whole object, or one part of a multipart upload."""
        refused = self._signed_request(r)
        if refused is not None:
            return refused
        kind, repo_id, oid, part = m[1], m[2], m[3], m[4]
        repo = self._repo(kind, repo_id)
        assert repo is not None, "a signed URL names a repo that exists"
        if part is None:
            repo.objects[oid] = r.body
        else:
            self._parts.setdefault((kind, repo_id, oid), {})[int(part)] = r.body
        return httpx2.Response(200, headers={"ETag": f'"{hashlib.md5(r.body).hexdigest()}"'})

    def _complete_multipart(self, r: Recorded, m: re.Match[str]) -> httpx2.Response:
        """The Hub's completion call: every part, in order, with the ETag its PUT answered."""
        refused = self._signed_request(r)
        if refused is not None:
            return refused
        kind, repo_id, oid = "dataset" if m[1] else "model", m[2], m[3]
        repo, parts = self._repo(kind, repo_id), self._parts.get((kind, repo_id, oid), {})
        assert repo is not None, "a signed URL names a repo that exists"
        body = r.json()
        listed = [(p.get("partNumber"), p.get("etag")) for p in body.get("parts") or []]
        expected = [(n, f'"{hashlib.md5(parts[n]).hexdigest()}"') for n in sorted(parts)]
        if body.get("oid") != oid or not parts or listed != expected:
            return _storage_error(400, "InvalidPart", "One or more of the specified parts could not be found")
        repo.objects[oid] = b"".join(parts[n] for n in sorted(parts))
        del self._parts[(kind, repo_id, oid)]
        return httpx2.Response(200, json={"success": True})

    def _lfs_verify(self, kind: str, repo_id: str, r: Recorded) -> httpx2.Response:
        """The verify action: the object is in storage, at the size announced."""
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        body = r.json()
        oid, size = body.get("oid"), body.get("size")
        if oid not in repo.objects or len(repo.objects[oid]) != size:
            return _lfs_json({"message": f"object {oid} of size {size} not found in storage"}, 404)
        repo.verified.add(oid)
        return _lfs_json({"success": True})

    def _commit(self, kind: str, repo_id: str, r: Recorded) -> httpx2.Response:
        """An ndjson commit: a header line, then ``file`` / ``lfsFile`` / ``deletedFile`` lines, all or nothing."""
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        try:
            items = [json.loads(line) for line in r.body.splitlines() if line.strip()]
        except ValueError:
            return _error(400, "the commit payload is not ndjson")
        if not items or items[0].get("key") != "header":
            return _error(400, "the first line of a commit is its header")
        staged: dict[str, tuple[bytes, str | None]] = {}
        deleted: list[str] = []
        inline = {item["value"]["path"]: _content(item["value"]) for item in items[1:] if item.get("key") == "file"}
        patterns = repo.patterns(inline)
        for item in items[1:]:
            key, value = item.get("key"), item.get("value") or {}
            path = value.get("path")
            if key == "deletedFile":
                deleted.append(path)
                continue
            if key == "file":
                answer = self._inline_file(repo, path, inline[path], patterns)
            elif key == "lfsFile":
                answer = self._lfs_file(repo, path, value)
            else:
                return _error(400, "Add a line with the key `lfsFile`, `file` or `deletedFile`")
            if isinstance(answer, httpx2.Response):
                return answer
            staged[path] = answer
        for path in deleted:
            repo.files.pop(path, None)
            repo.lfs.pop(path, None)
        for path, (data, sha) in staged.items():
            repo.files[path] = data
            if sha is None:
                repo.lfs.pop(path, None)
            else:
                repo.lfs[path] = sha
                if not is_tracked(path, repo.patterns()):
                    repo.track(path)
        repo.answered.clear()
        oid = hashlib.sha1(f"{repo_id}:{len(repo.commits)}:{sorted(repo.files)}".encode()).hexdigest()
        repo.commits.append(oid)
        prefix = "datasets/" if kind == "dataset" else ""
        return httpx2.Response(
            200,
            json={
                "commitUrl": f"https://huggingface.co/{prefix}{repo_id}/commit/{oid}",
                "commitOid": oid,
                "success": True,
            },
        )

    @staticmethod
    def _inline_file(repo: Repo, path: str, data: bytes, patterns: list[str]) -> tuple[bytes, None] | httpx2.Response:
        """A file sent inline (base64), refused when it belongs in LFS.

        Empty files are always inline (huggingface_hub sends them so: storage refuses empty objects).
        """
        if not data:
            return data, None
        mode, why = upload_mode(path, len(data), data[:512], patterns)
        if why == "large":
            return _rejected("files larger than 10 MiB", path)
        if why == "binary":
            return _rejected("binary files", path)
        if mode == "lfs" or repo.answered.get(path) == "lfs":
            return _rejected("files that .gitattributes or the preupload answer put in LFS sent as regular files", path)
        return data, None

    @staticmethod
    def _lfs_file(repo: Repo, path: str, value: dict[str, Any]) -> tuple[bytes, str] | httpx2.Response:
        """An ``lfsFile`` line: it must point at a verified object of that sha256 and size."""
        oid, size = value.get("oid"), value.get("size")
        if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str):
            return _error(400, f"{path}: lfsFile needs algo sha256 and an oid")
        data = repo.objects.get(oid)
        if data is None or oid not in repo.verified:
            return _missing_object(path)
        if hashlib.sha256(data).hexdigest() != oid or len(data) != size:
            return _error(400, f"{path}: the LFS object does not match its pointer (sha256 {oid}, size {size})")
        return data, oid

    def _repo_info(self, kind: str, repo_id: str) -> httpx2.Response:
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        return httpx2.Response(
            200,
            json={
                "id": repo_id,
                "sha": repo.head,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "tags": [],
                "siblings": [{"rfilename": f} for f in sorted(repo.files)],
                **self._card_data(repo),
            },
        )

    @staticmethod
    def _card_data(repo: Repo) -> dict[str, Any]:
        """A dataset repo's ``cardData``: its README's YAML front matter, as the Hub gives it."""
        text = repo.files.get("README.md", b"").decode("utf-8", "replace")
        if repo.kind != "dataset" or not text.startswith("---\n") or "\n---" not in text[3:]:
            return {}
        import yaml

        data = yaml.safe_load(text[4 : text.index("\n---", 3)])
        return {"cardData": data} if isinstance(data, dict) else {}

    def _tree(self, kind: str, repo_id: str, revision: str, folder: str, r: Recorded, user: str) -> httpx2.Response:
        """A folder's listing (``list_repo_tree``, and ``HfFileSystem`` under ``datasets``): its files with
        size and blob id (LFS files with their sha256), its subfolders, everything below with ``recursive``."""
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        refused = self._dataset_refusal(kind, repo_id, revision, user, files=True)
        if refused is not None:
            return refused
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        recursive = dict(r.query).get("recursive", "false").lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                sub = prefix + "/".join(parts[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(sub, {"type": "directory", "oid": SHA1_EMPTY, "size": 0, "path": sub})
            if len(parts) == 1 or recursive:
                data = repo.files[path]
                entry: dict[str, Any] = {"type": "file", "oid": git_oid(data), "size": len(data), "path": path}
                sha = repo.lfs.get(path)
                if sha is not None:
                    entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": len(lfs_pointer(sha, len(data)))}
                entries[path] = entry
        if prefix and not entries:
            return _error(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        return httpx2.Response(200, json=list(entries.values()))

    def _dataset_refusal(
        self, kind: str, repo_id: str, revision: str | None, user: str, *, files: bool = False
    ) -> httpx2.Response | None:
        """The Hub's refusal of a read of a dataset repo, or None (model repos: None, as before).

        A private repo is "not found" to others: 401 without a token, 404 with another user's. A gated
        repo's info is public, its files answer 403 ``GatedRepo``. An unknown revision is 404
        ``RevisionNotFound``."""
        repo = self._repo(kind, repo_id)
        if kind != "dataset" or repo is None:
            return None
        if not self._can_read(repo, user or None):
            return _error(401 if not user else 404, "Repository not found", "RepoNotFound")
        if not self._known_revision(repo, revision):
            return _error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if files and repo.gated:
            return _error(
                403, f"Access to dataset {repo_id} is restricted and you are not in the authorized list", "GatedRepo"
            )
        return None

    def _can_read(self, repo: Repo, user: str | None) -> bool:
        return not repo.private or (user is not None and repo.id.startswith(f"{user}/"))

    @staticmethod
    def _known_revision(repo: Repo, revision: str | None) -> bool:
        """A dataset repo answers for ``main``, its commits and its :attr:`Repo.branches` only (model
        repos, as before, for any revision)."""
        if repo.kind != "dataset" or revision is None:
            return True
        revision = unquote(revision)
        return revision in ("main", repo.head, *repo.commits, *repo.branches)

    def _resolve(self, kind: str, repo_id: str, path: str, r: Recorded) -> httpx2.Response:
        """A file's download: its bytes, or for an LFS file the Hub's redirect to a signed CDN URL."""
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        if path not in repo.files:
            return _error(404, "Entry not found", "EntryNotFound")
        data = repo.files[path]
        sha = repo.lfs.get(path)
        if sha is None:
            headers = {
                "X-Repo-Commit": repo.head,
                "X-Linked-Etag": f'"{git_oid(data)}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_oid(data)}"',
            }
            return httpx2.Response(200, content=b"" if r.method == "HEAD" else data, headers=headers)
        headers = {
            "X-Repo-Commit": repo.head,
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(data)),
            "ETag": f'"{git_oid(lfs_pointer(sha, len(data)))}"',
            "Location": self._signed(_other_origin(r.origin), f"/__cdn/{kind}/{repo_id}/{sha}"),
        }
        return httpx2.Response(302, headers=headers)

    def _cdn(self, r: Recorded, m: re.Match[str]) -> httpx2.Response:
        refused = self._signed_request(r)
        if refused is not None:
            return refused
        repo = self._repo(m[1], m[2])
        data = repo.objects.get(m[3]) if repo is not None else None
        if data is None:
            return _storage_error(404, "NoSuchKey", "The specified key does not exist.")
        headers = {"ETag": f'"{m[3]}"', "Content-Length": str(len(data))}
        return httpx2.Response(200, content=b"" if r.method == "HEAD" else data, headers=headers)

    # -- jobs ------------------------------------------------------------------------------------
    def _create_job(self, namespace: str, r: Recorded, user: str) -> httpx2.Response:
        if namespace not in (user, "acme"):
            return _error(403, f"You cannot create jobs in the namespace {namespace}")
        body = r.json()
        if body.get("flavor") not in FLAVORS:
            return httpx2.Response(400, json={"error": f"Invalid flavor '{body.get('flavor')}': unknown hardware"})
        if not self.payment_method:
            return httpx2.Response(402, json={"error": "You must add a payment method to your account to run Jobs"})
        job_id = f"68{next(self._ids):022x}"
        body_no_secrets = {k: v for k, v in body.items() if k != "secrets"}
        job = Job(job_id, namespace, body_no_secrets, dict(body.get("secrets") or {}), self.now())
        self.jobs[job_id] = job
        return httpx2.Response(200, json=self._job_json(job))

    def _job_json(self, job: Job) -> dict[str, Any]:
        body = job.body
        out: dict[str, Any] = {
            "id": job.id,
            "createdAt": _iso(job.created_at),
            "dockerImage": body.get("dockerImage"),
            "spaceId": body.get("spaceId"),
            "command": body.get("command"),
            "arguments": body.get("arguments", []),
            "environment": body.get("environment", {}),
            "secrets": dict.fromkeys(job.secrets),  # names only, as the Hub shows them
            "flavor": body.get("flavor"),
            "labels": body.get("labels"),
            "timeoutSeconds": body.get("timeoutSeconds"),
            "status": {"stage": job.stage, "message": job.message},
            "owner": {"id": "u1", "name": job.namespace, "type": "user"},
        }
        if job.started_at:
            out["startedAt"] = _iso(job.started_at)
        if job.finished_at:
            out["finishedAt"] = _iso(job.finished_at)
        return out

    def _list_jobs(self, namespace: str, r: Recorded) -> httpx2.Response:
        wanted = [v.split("=", 1) for k, v in r.query if k == "label"]
        jobs = [
            j
            for j in self.jobs.values()
            if j.namespace == namespace and all((j.body.get("labels") or {}).get(k) == v for k, v in wanted)
        ]
        return httpx2.Response(200, json=[self._job_json(j) for j in jobs])

    def _logs(self, job: Job) -> httpx2.Response:
        events = [(job.started_at or job.created_at, f"===== Job started at {_iso(job.created_at)} =====")]
        events += job.logs
        content = "".join(f"data: {json.dumps({'timestamp': _iso(t), 'data': line})}\n\n" for t, line in events)
        return httpx2.Response(200, content=content.encode(), headers={"Content-Type": "text/event-stream"})

    # -- Inference Endpoints -----------------------------------------------------------------------
    def endpoint(self, name: str, namespace: str = USER) -> Endpoint:
        return self.endpoints[(namespace, name)]

    def set_state(self, name: str, state: str, message: str | None = None, namespace: str = USER) -> None:
        endpoint = self.endpoint(name, namespace)
        endpoint.state, endpoint.message, endpoint.updated_at = state, message, self.now()

    @property
    def endpoint_creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and urlsplit(r.url).hostname == ENDPOINTS_HOST]

    def _endpoints_api(self, r: Recorded) -> httpx2.Response:
        user = self._user(r)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        m = re.fullmatch(r"/v2/(endpoint|provider)/([^/]+)(?:/([^/]+))?", r.path)
        if m is None:
            return _error(404, f"no route for {r.method} {r.path}")
        namespace, name = m[2], m[3]
        if namespace not in (user, "acme"):
            return _error(403, f"You don't have access to the namespace {namespace}")
        if m[1] == "provider":
            return self._hardware() if r.method == "GET" and name is None else _error(405, "Method not allowed")
        if name is None:
            if r.method == "POST":
                return self._create_endpoint(namespace, r)
            items = [self._endpoint_json(e) for e in self.endpoints.values() if e.namespace == namespace]
            return httpx2.Response(200, json={"items": items})
        endpoint = self.endpoints.get((namespace, name))
        if endpoint is not None and endpoint.deleting is not None:
            if endpoint.deleting <= 0:
                del self.endpoints[(namespace, name)]
                endpoint = None
            else:
                endpoint.deleting -= 1
        if endpoint is None:
            return _error(404, f"Endpoint {name} not found")
        if r.method == "DELETE":
            endpoint.deleting = self.delete_lag
            return httpx2.Response(200, json={})
        if r.method != "GET":
            return _error(405, "Method not allowed")
        if self.auto_deploy:
            moves = {"pending": "initializing", "initializing": "running"}
            if endpoint.state in moves:
                self.set_state(name, moves[endpoint.state], namespace=namespace)
        return httpx2.Response(200, json=self._endpoint_json(endpoint))

    @staticmethod
    def _hardware() -> httpx2.Response:
        vendors: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for vendor, region, accelerator, kind, size, price, status in HARDWARE:
            vendors.setdefault(vendor, {}).setdefault(region, []).append(
                {
                    "id": f"{vendor}-{region}-{kind}-{size}",
                    "accelerator": accelerator,
                    "instanceType": kind,
                    "instanceSize": size,
                    "architecture": kind.upper(),
                    "numAccelerators": int(size[1:]),
                    "numCpus": 8,
                    "memoryGb": 32.0,
                    "gpuMemoryGb": 24 if accelerator == "gpu" else None,
                    "pricePerHour": price,
                    "status": status,
                    "quota": {"maxAccelerators": 4, "usedAccelerators": 0},
                }
            )
        return httpx2.Response(
            200,
            json={
                "vendors": [
                    {"name": v, "regions": [{"name": region, "computes": c} for region, c in regions.items()]}
                    for v, regions in vendors.items()
                ]
            },
        )

    @staticmethod
    def _create_problem(body: Any) -> str | None:
        """Why the API would refuse this create body (None: it would not): the fields huggingface_hub's
        ``create_inference_endpoint`` sends, checked for presence, type and the values the API knows."""
        if not isinstance(body, dict):
            return "the body must be an object"
        parts = {"": body, **{k: body.get(k) for k in ("compute", "model", "provider")}}
        parts["scaling"] = (body.get("compute") or {}).get("scaling")
        for part, keys in _CREATE_KEYS.items():
            value = parts.get(part)
            if not isinstance(value, dict):
                return f"{part} is required"
            if set(value) - keys:
                return f"{part or 'body'}: unknown field(s) {sorted(set(value) - keys)}"
        compute, model, scaling = body["compute"], body["model"], body["compute"]["scaling"]
        if not isinstance(body.get("name"), str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}[a-z0-9]", body["name"]):
            return "name: lowercase letters, digits and '-', 2 to 32 characters"
        if body.get("type") not in ("public", "protected", "authenticated", "private"):
            return f"type: unknown value {body.get('type')!r}"
        if body["type"] == "private" and "privateService" not in body:
            return "a private endpoint needs privateService (AWS PrivateLink)"
        problem = FakeHub._model_problem(model)
        if problem is not None:
            return problem
        low, high, idle = scaling.get("minReplica"), scaling.get("maxReplica"), scaling.get("scaleToZeroTimeout")
        if not isinstance(low, int) or not isinstance(high, int) or low < 0 or high < max(1, low):
            return "compute.scaling: 0 <= minReplica <= maxReplica, maxReplica >= 1"
        if idle is not None and (not isinstance(idle, int) or idle < 1):
            return "compute.scaling.scaleToZeroTimeout: minutes, at least 1"
        wanted = (body["provider"].get("vendor"), body["provider"].get("region"), compute.get("accelerator"))
        wanted += (compute.get("instanceType"), compute.get("instanceSize"))
        if wanted not in {h[:5] for h in HARDWARE}:
            return f"compute: no such instance {wanted}"
        return None

    @staticmethod
    def _model_problem(model: dict[str, Any]) -> str | None:
        """Why the API would refuse a create's ``model`` part."""
        for key in ("framework", "repository"):
            if not isinstance(model.get(key), str) or not model[key]:
                return f"model.{key} is required"
        image = model.get("image")
        if not isinstance(image, dict) or len(image) != 1 or next(iter(image)) not in IMAGE_VARIANTS:
            return f"model.image: one of {sorted(IMAGE_VARIANTS)}"
        variant, config = next(iter(image.items()))
        if variant not in ("huggingface", "huggingfaceNeuron") and not isinstance((config or {}).get("url"), str):
            return f"model.image.{variant}.url is required"
        for key in ("env", "secrets"):
            if key in model and not all(isinstance(v, str) for v in (model[key] or {}).values()):
                return f"model.{key}: string values only"
        return None

    def _create_endpoint(self, namespace: str, r: Recorded) -> httpx2.Response:
        try:
            body = r.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        problem = self._create_problem(body)
        if problem is not None:
            return httpx2.Response(400, json={"error": problem})
        if (namespace, body["name"]) in self.endpoints:
            return _error(409, f"An endpoint named {body['name']} already exists in {namespace}")
        if not self.payment_method:
            return httpx2.Response(402, json={"error": "You must add a payment method to create Inference Endpoints"})
        secrets = dict(body["model"].pop("secrets", None) or {})
        endpoint = Endpoint(namespace, body, secrets, self.now(), f"{next(self._ids):016x}")
        endpoint.updated_at = endpoint.created_at
        self.endpoints[(namespace, body["name"])] = endpoint
        return httpx2.Response(200, json=self._endpoint_json(endpoint))

    def _endpoint_json(self, endpoint: Endpoint) -> dict[str, Any]:
        """An endpoint as the API shows it (what ``InferenceEndpoint._populate_from_raw`` reads)."""
        body = endpoint.body
        model = {k: v for k, v in body["model"].items()}
        model.setdefault("revision", None)
        model.setdefault("task", None)
        if endpoint.secrets:
            model["secrets"] = dict.fromkeys(endpoint.secrets, "")  # names only
        ready = endpoint.state in ("running", "scaledToZero")
        return {
            "name": endpoint.name,
            "type": body["type"],
            "accountId": None,
            "provider": body["provider"],
            "compute": body["compute"],
            "model": model,
            "healthRoute": ((next(iter(model["image"].values())) or {}).get("healthRoute")) or "/health",
            "tags": body.get("tags") or [],
            "status": {
                "createdAt": _iso(endpoint.created_at),
                "createdBy": {"id": "u1", "name": endpoint.namespace},
                "updatedAt": _iso(endpoint.updated_at or endpoint.created_at),
                "updatedBy": {"id": "u1", "name": endpoint.namespace},
                "state": endpoint.state,
                "message": endpoint.message or f"Endpoint is {endpoint.state}",
                "readyReplica": 1 if endpoint.state == "running" else 0,
                "targetReplica": 1,
                "url": endpoint.url if ready else None,
                "private": None,
            },
        }

    def _endpoint_serving(self, r: Recorded, host: str) -> httpx2.Response:
        """A running endpoint's TGI: ``POST /v1/chat/completions`` (the Messages API), its adapters by ``model``."""
        endpoint = next((e for e in self.endpoints.values() if urlsplit(e.url).hostname == host), None)
        if endpoint is None or endpoint.deleting is not None:
            return _error(404, "Not Found")
        user = self._user(r)
        if endpoint.body["type"] != "public" and (user is None or endpoint.namespace not in (user, "acme")):
            return _error(401, "Unauthorized")
        if endpoint.state == "scaledToZero":  # the request wakes it; until then, 503
            self.set_state(endpoint.name, "running", namespace=endpoint.namespace)
            return httpx2.Response(503, json={"error": "Service Unavailable"}, headers={"Retry-After": "30"})
        if endpoint.state != "running":
            return _error(503, f"Endpoint is {endpoint.state}")
        if r.method != "POST" or r.path != "/v1/chat/completions":
            return _error(404, "Not Found")
        body = r.json()
        adapters = [
            a.split("@")[0].split("=")[0]
            for a in (endpoint.body["model"].get("env") or {}).get("LORA_ADAPTERS", "").split(",")
            if a
        ]
        model = body.get("model")
        if model != "tgi" and model not in adapters:
            return httpx2.Response(422, json={"error": f"Adapter {model} is not loaded", "error_type": "validation"})
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all("role" in m and "content" in m for m in messages):
            return httpx2.Response(
                422, json={"error": "messages: a list of {role, content}", "error_type": "validation"}
            )
        temperature = body.get("temperature")
        if temperature is not None and temperature < 0:
            return httpx2.Response(422, json={"error": "temperature must be >= 0", "error_type": "validation"})
        self.chats.append((endpoint.name, body))
        text = f"[{model}] {messages[-1]['content']}"
        return httpx2.Response(
            200,
            json={
                "object": "chat.completion",
                "id": "",
                "created": int(self.clock()),
                "model": endpoint.body["model"]["repository"],
                "system_fingerprint": "3.3.2-sha-fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            },
        )

    # -- a real HTTP server, for a child process -------------------------------------------------
    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve this fake on a loopback port; yields its base URL (give it as ``HF_ENDPOINT``)."""
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():  # a streamed upload
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _any(self) -> None:
                body = self._body()
                host = f"http://127.0.0.1:{self.server.server_address[1]}"
                framing = ("content-length", "transfer-encoding")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in framing}
                request = httpx2.Request(self.command, host + self.path, headers=headers, content=body)
                response = fake.handle(request)
                data = response.read()
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with serving(LoopbackServer(Handler)) as server:
            yield server.url
