"""An in-memory Hugging Face Hub (repos, commits, files, Jobs API) at the HTTP level.

The real huggingface_hub client talks to it: in the test process through
``huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(...)))``,
and from a subprocess (the job's own command) through :meth:`FakeHub.serve`, a loopback HTTP server
given to the child as ``HF_ENDPOINT``.  Answers follow the shapes huggingface_hub parses
(``JobInfo``'s camelCase fields, SSE log events, preupload / ndjson commit, resolve headers) and its
error conventions (``X-Error-Code``, ``X-Error-Message``, ``{"error": ...}`` bodies).

Jobs do not run by themselves: a test moves them with :meth:`start`, :meth:`log` and :meth:`finish`.
Faults (:meth:`fail`) answer a status, raise a transport error, drop a log stream midway, or end a
log replay early without an error.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
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


def git_oid(data: bytes) -> str:
    """The git blob sha1 huggingface_hub computes for a regular file (its ``_local_oid``)."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


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


@dataclass
class Repo:
    kind: str
    id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    gated: bool = False

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else SHA1_EMPTY


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
        self.faults: list[Fault] = []
        self.tokens = {TOKEN: USER}
        self.payment_method = True
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

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
        repo = Repo(kind, repo_id, private, dict(files or {}), gated=gated)
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
            (None, rf"{repo}/(.+?)/preupload/([^/]+)", lambda r, user, m: self._preupload(m[1], m[2], r)),
            (None, rf"{repo}/(.+?)/commit/([^/]+)", lambda r, user, m: self._commit(m[1], m[2], r)),
            (None, rf"{repo}/([^/]+/[^/]+)(?:/revision/([^/]+))?", lambda r, user, m: self._repo_info(m[1], m[2])),
            (
                None,
                rf"{repo}/([^/]+/[^/]+)/tree/.*",
                lambda r, user, m: _error(404, "Entry not found", "EntryNotFound"),
            ),
            (
                None,
                r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)",
                lambda r, user, m: self._resolve("dataset" if m[1] else "model", m[2], m[4], r.method),
            ),
            ("POST", r"/api/jobs/([^/]+)", lambda r, user, m: self._create_job(m[1], r, user)),
            (None, r"/api/jobs/([^/]+)", lambda r, user, m: self._list_jobs(m[1], r)),
            (None, r"/api/jobs/([^/]+)/([^/]+)(/logs|/cancel)?", self._job_route),
        ]

    def _route(self, r: Recorded) -> httpx2.Response:
        if r.path == "/api/agent-harnesses":
            return httpx2.Response(200, json={"standardEnvVars": [], "harnesses": {}})
        user = self._user(r)
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

    def _preupload(self, kind: str, repo_id: str, r: Recorded) -> httpx2.Response:
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_oid(repo.files[f["path"]]) if f["path"] in repo.files else None,
            }
            for f in r.json()["files"]
        ]
        return httpx2.Response(200, json={"files": files, "commitOid": repo.head})

    def _commit(self, kind: str, repo_id: str, r: Recorded) -> httpx2.Response:
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        for line in r.body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                return _error(400, f"unsupported commit operation {item['key']}")
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
            },
        )

    def _resolve(self, kind: str, repo_id: str, path: str, method: str) -> httpx2.Response:
        repo = self._repo(kind, repo_id)
        if repo is None:
            return _error(404, "Repository not found", "RepoNotFound")
        if path not in repo.files:
            return _error(404, "Entry not found", "EntryNotFound")
        data = repo.files[path]
        headers = {
            "X-Repo-Commit": repo.head,
            "X-Linked-Etag": f'"{git_oid(data)}"',
            "X-Linked-Size": str(len(data)),
            "ETag": f'"{git_oid(data)}"',
        }
        return httpx2.Response(200, content=b"" if method == "HEAD" else data, headers=headers)

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

    # -- a real HTTP server, for a child process -------------------------------------------------
    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve this fake on a loopback port; yields its base URL (give it as ``HF_ENDPOINT``)."""
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                host = f"http://127.0.0.1:{self.server.server_address[1]}"
                request = httpx2.Request(
                    self.command, host + self.path, headers=dict(self.headers.items()), content=body
                )
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
