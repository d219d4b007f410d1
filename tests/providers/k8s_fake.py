"""An HTTP-level fake of the Kubernetes API server on loopback, for the real ``kubernetes`` client.

Serves what the ``kubernetes`` provider (and Kaito/Kubeflow custom resources) use: namespaces,
nodes, PersistentVolumeClaims, Secrets (existence only), ConfigMaps, Services, batch/v1 Jobs
(create, get, list with ``labelSelector``, delete), the pods a Job makes (phases scripted per job),
``pods/{name}/log`` (``timestamps``, ``follow`` streaming that can drop), Events
(``fieldSelector=involvedObject.name=``), API discovery (``GET /apis``, ``GET /apis/{group}``:
``groups`` with their ``versions``), CustomResourceDefinitions by name (``crds``), and generic custom
objects (``/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]``) whose ``status`` follows a
script (``statuses[name]``, one entry per read, the last kept). Errors are ``Status`` objects.

Kaito's part is played too: a Workspace is refused (400, as Kaito's webhook does) when its tuning
ConfigMap is missing, and once made it runs a batch/v1 Job of its name (pods labelled
``job-name``), whose pods and logs follow the workspace's reads (:func:`kaito_statuses`).

A job advances one stage per read of it (``Pending`` -> ``Running`` -> its outcome), so a
provider polling with a fake clock sees every stage. ``faults`` holds one-shot faults matched by
method and path: ``("status", code, headers)``, ``("after", code)`` (the request acts, then the
answer is that error), or ``("drop",)`` (the connection closes without an answer).
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.loopback import LoopbackServer

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Script:
    """How a job's pods behave: ``outcome`` succeeded | failed | unschedulable | image."""

    outcome: str = "succeeded"
    lines: list[str] | None = None


@dataclass
class Fault:
    method: str
    path: str  # a regular expression searched in the path
    kind: tuple[Any, ...]


@dataclass
class FakeCluster:
    namespaces: set[str] = field(default_factory=lambda: {"default"})
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pvcs: set[tuple[str, str]] = field(default_factory=set)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (plural, ns, name)
    custom: dict[tuple[str, str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    #: Served versions of a group in ``groups`` (default ``["v1"]``).
    versions: dict[str, list[str]] = field(default_factory=dict)
    #: CustomResourceDefinitions served, by name (``trainjobs.trainer.kubeflow.org``).
    crds: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: A custom object's ``status`` at its first, second... read (the last one stays).
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    scripts: dict[str, Script] = field(default_factory=dict)
    default_script: Script = field(default_factory=Script)
    faults: list[Fault] = field(default_factory=list)
    #: A ``follow=true`` log stream ends after this many lines without an end of stream (a drop).
    cut_follow: int | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gpu_node(self, name: str, gpus: int, labels: dict[str, str] | None = None) -> None:
        self.nodes.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": {},
                "status": {"allocatable": {"cpu": "16", "nvidia.com/gpu": str(gpus)}},
            }
        )

    def created(self) -> list[str]:
        return [p for m, p in self.requests if m == "POST"]

    def fault(self, method: str, path: str, *kind: Any) -> None:
        self.faults.append(Fault(method, path, kind))

    def jobs(self) -> list[dict[str, Any]]:
        return [o for (plural, _, _), o in self.objects.items() if plural == "jobs"]

    def serve(self, group: str, *versions: str) -> None:
        self.groups.append(group)
        self.versions[group] = list(versions) or ["v1"]


def kaito_statuses(outcome: str = "succeeded") -> list[dict[str, Any]]:
    """A tuning Workspace's status as Kaito's controller moves it: nodes provisioning, the Job
    running, then ``outcome`` (succeeded | failed)."""
    provisioning = {
        "conditions": [
            {"type": "ResourceReady", "status": "False", "reason": "NodeClaimNotReady", "message": "provisioning"}
        ]
    }
    started = {"type": "JobStarted", "status": "True", "reason": "JobStarted", "lastTransitionTime": _ts(1)}
    running = {"state": "Running", "conditions": [started]}
    if outcome == "succeeded":
        done = {"type": "WorkspaceSucceeded", "status": "True", "reason": "Succeeded", "lastTransitionTime": _ts(60)}
        return [provisioning, running, {"state": "Succeeded", "conditions": [started, done]}]
    job_failed = {
        "type": "JobStarted",
        "status": "False",
        "reason": "WorkspaceTuningJobStatusFailed",
        "message": "the tuning job failed: 1 pod failed",
    }
    failed = {"type": "WorkspaceSucceeded", "status": "False", "reason": "workspaceFailed", "message": "failed"}
    return [provisioning, running, {"state": "Failed", "conditions": [job_failed, failed]}]


def kubeflow_statuses(kind: str, outcome: str = "succeeded") -> list[dict[str, Any]]:
    """A ``TrainJob``'s (``kind`` trainjob) or ``PyTorchJob``'s status as its operator moves it:
    created, running, then ``outcome`` (succeeded | failed)."""
    done = outcome == "succeeded"
    if kind == "trainjob":
        end = {
            "type": "Complete" if done else "Failed",
            "status": "True",
            "reason": "JobSetCompleted" if done else "JobSetFailed",
            "message": "" if done else "jobset failed: node-0 failed",
            "lastTransitionTime": _ts(60),
        }
        running = {"jobsStatus": [{"name": "node", "active": 1, "ready": 1, "succeeded": 0, "failed": 0}]}
        return [{}, running, {"conditions": [end]}]
    created = {"type": "Created", "status": "True", "reason": "PyTorchJobCreated", "lastTransitionTime": _ts(0)}
    run = {"type": "Running", "status": "True", "reason": "PyTorchJobRunning", "lastTransitionTime": _ts(1)}
    end = {
        "type": "Succeeded" if done else "Failed",
        "status": "True",
        "reason": "PyTorchJobSucceeded" if done else "PyTorchJobFailed",
        "message": "" if done else "PyTorchJob failed because master replica(s) failed",
        "lastTransitionTime": _ts(60),
    }
    return [
        {"conditions": [created]},
        {"conditions": [created, run], "startTime": _ts(1)},
        {"conditions": [created, {**run, "status": "False"}, end], "startTime": _ts(1), "completionTime": _ts(60)},
    ]


#: The Kubeflow kinds the fake plays the operator of: (group, plural) -> anytune's workload name.
KUBEFLOW = {("trainer.kubeflow.org", "trainjobs"): "trainjob", ("kubeflow.org", "pytorchjobs"): "pytorchjob"}


def _kubeflow_pod_labels(kind: str, body: dict[str, Any]) -> dict[str, str]:
    spec = body.get("spec") or {}
    if kind == "trainjob":
        patch = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        labels = dict(patch["template"]["spec"]["template"]["metadata"]["labels"])
        return {**labels, "trainer.kubeflow.org/trainjob-name": body["metadata"]["name"]}
    template = spec["pytorchReplicaSpecs"]["Master"]["template"]
    return {
        **template["metadata"]["labels"],
        "training.kubeflow.org/job-name": body["metadata"]["name"],
        "training.kubeflow.org/replica-type": "master",
    }


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    404: "NotFound",
    409: "AlreadyExists",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def default_lines(job: dict[str, Any]) -> list[str]:
    annotations = job["metadata"].get("annotations") or {}
    name = annotations.get("fake/owner") or job["metadata"]["name"]
    storage = annotations.get("anytune.dev/storage", "s3://b")
    location = f"{storage}/jobs/{name}"
    result = {"location": location, "adapter": f"{location}/adapter", "result": {"steps": 2, "train_tokens": 40}}
    return [
        "[anytune] copying the data",
        'ANYTUNE_METRIC {"step":1,"train_loss":2.5}',
        'ANYTUNE_METRIC {"step":2,"train_loss":2.0}',
        "ANYTUNE_RESULT " + json.dumps(result),
    ]


@dataclass
class _Stream:
    lines: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Any
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: without TCP_NODELAY each answer waits for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def cluster(self) -> FakeCluster:
        return self.server.cluster  # type: ignore[no-any-return]

    # -- plumbing
    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None, text: bool = False) -> None:
        data = body.encode() if text else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str = "", headers: dict[str, str] | None = None) -> None:
        self._send(code, status(code, _REASONS.get(code, "BadRequest"), message or f"fake {code}"), headers)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def _fault(self, method: str, path: str) -> tuple[Any, ...] | None:
        with self.cluster.lock:
            for f in self.cluster.faults:
                if f.method == method and re.search(f.path, path):
                    self.cluster.faults.remove(f)
                    return f.kind
        return None

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = url.path, {k: v[0] for k, v in parse_qs(url.query).items()}
        self.cluster.requests.append((method, path))
        body = self._body() if method in ("POST", "PUT", "PATCH") else {}
        fault = self._fault(method, path)
        if fault is not None and fault[0] == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if fault is not None and fault[0] == "status":
            self._error(fault[1], headers=fault[2] if len(fault) > 2 else None)
            return
        code, answer = self._route(method, path, query, body)
        if fault is not None and fault[0] == "after":
            self._error(fault[1])
            return
        if isinstance(answer, _Stream):
            self._stream(answer)
        elif isinstance(answer, str):
            self._send(code, answer, text=True)
        else:
            self._send(code, answer)

    def _stream(self, stream: _Stream) -> None:
        """A followed log: chunked, one line per chunk; cut short (the socket closed mid-stream)
        when the cluster says so."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cut = self.cluster.cut_follow
        for i, line in enumerate(stream.lines):
            if cut is not None and i >= cut:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            data = (line + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routes
    def _route(self, method: str, path: str, q: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        c = self.cluster
        found = self._discovery(path)
        if found is not None:
            return found
        if path == "/api/v1/nodes":
            return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": c.nodes}
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
        if m:
            if m[1] in c.namespaces:
                return 200, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": m[1]}}
            return 404, status(404, "NotFound", f'namespaces "{m[1]}" not found')
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/persistentvolumeclaims/([^/]+)", path)
        if m:
            if (m[1], m[2]) in c.pvcs:
                return 200, {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": m[2]},
                    "spec": {},
                }
            return 404, status(404, "NotFound", f'persistentvolumeclaims "{m[2]}" not found')
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)
        if m:
            if (m[1], m[2]) in c.secrets:
                data = {k: v for k, v in c.secrets[(m[1], m[2])].items()}
                return 200, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": m[2]}, "data": data}
            return 404, status(404, "NotFound", f'secrets "{m[2]}" not found')
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path)
        if m:
            return self._log(m[1], m[2], q)
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
        if m:
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self._pods(m[1], q)}
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/events", path)
        if m:
            return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": self._events(m[1], q)}
        m = re.fullmatch(r"/(?:api/v1|apis/batch/v1)/namespaces/([^/]+)/(configmaps|services|jobs)(?:/([^/]+))?", path)
        if m:
            return self._objects(method, m[2], m[1], m[3], q, body)
        m = re.fullmatch(r"/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?", path)
        if m:
            return self._custom(method, m[1], m[2], m[3], m[4], m[5], body)
        return 404, status(404, "NotFound", f"no route {path}")

    def _discovery(self, path: str) -> tuple[int, Any] | None:
        """``GET /apis``, ``GET /apis/{group}``, a CustomResourceDefinition by name; else None."""
        c = self.cluster
        if path in ("/apis", "/apis/"):
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in c.groups]}
        m = re.fullmatch(r"/apis/([^/]+)/?", path)
        if m:
            if m[1] in c.groups:
                return 200, {"kind": "APIGroup", "apiVersion": "v1", **self._group(m[1])}
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        m = re.fullmatch(r"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/([^/]+)", path)
        if m:
            if m[1] in c.crds:
                return 200, c.crds[m[1]]
            return 404, status(404, "NotFound", f'customresourcedefinitions.apiextensions.k8s.io "{m[1]}" not found')
        return None

    def _group(self, group: str) -> dict[str, Any]:
        versions = self.cluster.versions.get(group, ["v1"])
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": listed, "preferredVersion": listed[0]}

    def _objects(
        self, method: str, plural: str, ns: str, name: str | None, q: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        c = self.cluster
        kind = {"configmaps": "ConfigMap", "services": "Service", "jobs": "Job"}[plural]
        if ns not in c.namespaces:
            return 404, status(404, "NotFound", f'namespaces "{ns}" not found')
        if method == "POST":
            new = body["metadata"]["name"]
            with c.lock:
                if (plural, ns, new) in c.objects:
                    return 409, status(409, "AlreadyExists", f'{plural} "{new}" already exists')
                body["metadata"].update({"uid": str(uuid.uuid4()), "creationTimestamp": _ts(0), "namespace": ns})
                if plural == "jobs":
                    body["status"] = {}
                c.objects[(plural, ns, new)] = body
            return 201, body
        if name is None:
            items = [o for (p, n, _), o in c.objects.items() if p == plural and n == ns]
            selector = q.get("labelSelector")
            if selector:
                k, _, v = selector.partition("=")
                items = [o for o in items if (o["metadata"].get("labels") or {}).get(k) == v]
            return 200, {
                "kind": f"{kind}List",
                "apiVersion": "v1" if kind != "Job" else "batch/v1",
                "metadata": {},
                "items": items,
            }
        obj = c.objects.get((plural, ns, name))
        if obj is None:
            return 404, status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "DELETE":
            with c.lock:
                c.objects.pop((plural, ns, name), None)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        if plural == "jobs":
            self._advance(obj)
        return 200, obj

    def _script(self, job: dict[str, Any]) -> Script:
        return self.cluster.scripts.get(self._owner(job), self.cluster.default_script)

    def _advance(self, job: dict[str, Any]) -> None:
        c = self.cluster
        name = job["metadata"]["name"]
        with c.lock:
            c.reads[name] = c.reads.get(name, 0) + 1
            stage = c.reads[name]
        script = self._script(job)
        if script.outcome in ("unschedulable", "image"):
            return
        if stage >= 2:
            job["status"] = {"startTime": _ts(1), "active": 1}
        if stage >= 3:
            done = script.outcome == "succeeded"
            cond = {
                "type": "Complete" if done else "Failed",
                "status": "True",
                "lastTransitionTime": _ts(60),
                "reason": "Completed" if done else "BackoffLimitExceeded",
                "message": "" if done else "Job has reached the specified backoff limit",
            }
            job["status"] = {"startTime": _ts(1), "conditions": [cond], **({"completionTime": _ts(60)} if done else {})}

    @staticmethod
    def _owner(job: dict[str, Any]) -> str:
        """The object whose reads move the job along: a Kubeflow object's child Job follows its owner's."""
        return str((job["metadata"].get("annotations") or {}).get("fake/owner") or job["metadata"]["name"])

    def _pod_of(self, job: dict[str, Any]) -> dict[str, Any]:
        name = job["metadata"]["name"]
        stage = self.cluster.reads.get(self._owner(job), 0)
        script = self._script(job)
        pod_status: dict[str, Any] = {"phase": "Pending"}
        if script.outcome == "unschedulable":
            pod_status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        elif script.outcome == "image":
            pod_status["containerStatuses"] = [
                {
                    "name": "trainer",
                    "image": "x",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
                }
            ]
        elif stage >= 3:
            pod_status["phase"] = "Succeeded" if script.outcome == "succeeded" else "Failed"
        elif stage >= 2:
            pod_status["phase"] = "Running"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-0-abcde",
                "namespace": job["metadata"]["namespace"],
                "labels": dict(job["spec"]["template"]["metadata"].get("labels") or {}),
                "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
                "creationTimestamp": _ts(0),
            },
            "spec": {"containers": [{"name": "trainer", "image": "x"}]},
            "status": pod_status,
        }

    def _pods(self, ns: str, q: dict[str, str]) -> list[dict[str, Any]]:
        k, _, v = q.get("labelSelector", "").partition("=")
        pods = []
        for (plural, n, _), job in list(self.cluster.objects.items()):
            if plural != "jobs" or n != ns:
                continue
            # The pods carry the template's labels (a Kubeflow object's child Job has others itself).
            if (job["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v:
                pods.append(self._pod_of(job))
        return pods

    def _job_of_pod(self, ns: str, pod: str) -> dict[str, Any] | None:
        for (plural, n, name), job in self.cluster.objects.items():
            if plural == "jobs" and n == ns and pod.startswith(name + "-"):
                return job
        return None

    def _log(self, ns: str, pod: str, q: dict[str, str]) -> tuple[int, Any]:
        job = self._job_of_pod(ns, pod)
        if job is None:
            return 404, status(404, "NotFound", f'pods "{pod}" not found')
        stage = self.cluster.reads.get(self._owner(job), 0)
        if stage < 2:
            return 400, status(400, "BadRequest", f'container "trainer" in pod "{pod}" is waiting to start')
        script = self._script(job)
        lines = script.lines if script.lines is not None else default_lines(job)
        if stage < 3:
            lines = lines[:2]
        if q.get("timestamps") == "true":
            lines = [f"{_ts(2 + i)[:-1]}.000000000Z {line}" for i, line in enumerate(lines)]
        if q.get("follow") == "true":
            return 200, _Stream(lines)
        return 200, "".join(line + "\n" for line in lines)

    def _events(self, ns: str, q: dict[str, str]) -> list[dict[str, Any]]:
        _, _, obj = q.get("fieldSelector", "").partition("=")
        out = []
        for (plural, n, name), job in self.cluster.objects.items():
            if plural != "jobs" or n != ns:
                continue
            if obj == name:
                out.append(
                    self._event(ns, "Job", name, "SuccessfulCreate", f"Created pod: {name}-0-abcde", "Normal", 0)
                )
            if obj == f"{name}-0-abcde" and self._script(job).outcome == "unschedulable":
                out.append(
                    self._event(
                        ns,
                        "Pod",
                        obj,
                        "FailedScheduling",
                        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                        "Warning",
                        1,
                    )
                )
        return out

    @staticmethod
    def _event(ns: str, kind: str, name: str, reason: str, message: str, type_: str, t: int) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{reason.lower()}", "namespace": ns},
            "involvedObject": {"kind": kind, "name": name, "namespace": ns},
            "reason": reason,
            "message": message,
            "type": type_,
            "lastTimestamp": _ts(t),
        }

    def _custom(
        self, method: str, group: str, version: str, ns: str, plural: str, name: str | None, body: dict[str, Any]
    ) -> tuple[int, Any]:
        c = self.cluster
        if group not in c.groups or version not in c.versions.get(group, ["v1"]):
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        if ns not in c.namespaces:
            return 404, status(404, "NotFound", f'namespaces "{ns}" not found')
        if method == "POST":
            key = (group, version, ns, plural, body["metadata"]["name"])
            with c.lock:
                if key in c.custom:
                    return 409, status(409, "AlreadyExists", f'{plural} "{key[-1]}" already exists')
                if (group, plural) == ("kaito.sh", "workspaces"):
                    refused = self._kaito_admit(ns, body)
                    if refused:
                        return 400, status(400, "BadRequest", refused)
                if (group, plural) in KUBEFLOW:
                    self._kubeflow_admit(KUBEFLOW[(group, plural)], ns, body)
                body["metadata"].update({"uid": str(uuid.uuid4()), "creationTimestamp": _ts(0), "namespace": ns})
                c.custom[key] = body
            return 201, body
        if name is None:
            items = [o for k, o in c.custom.items() if k[:4] == (group, version, ns, plural)]
            return 200, {"apiVersion": f"{group}/{version}", "kind": "List", "items": items}
        obj = c.custom.get((group, version, ns, plural, name))
        if obj is None:
            return 404, status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "DELETE":
            with c.lock:
                c.custom.pop((group, version, ns, plural, name))
                c.objects.pop(("jobs", ns, name), None)  # owned by the custom object: garbage collected
                c.objects.pop(("jobs", ns, f"{name}-node-0"), None)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        script = c.statuses.get(name)
        if script:
            with c.lock:
                c.reads[name] = c.reads.get(name, 0) + 1
                obj["status"] = script[min(c.reads[name], len(script)) - 1]
        return 200, obj

    def _kubeflow_admit(self, kind: str, ns: str, body: dict[str, Any]) -> None:
        """The operator: a child Job (a JobSet's, or standing for a PyTorchJob's pods) whose pods carry
        the labels the object gives them, moving as the object's scripted status does."""
        c = self.cluster
        name = body["metadata"]["name"]
        c.statuses.setdefault(name, kubeflow_statuses(kind))
        c.objects[("jobs", ns, f"{name}-node-0")] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{name}-node-0",
                "namespace": ns,
                "annotations": {**(body["metadata"].get("annotations") or {}), "fake/owner": name},
            },
            "spec": {"template": {"metadata": {"labels": _kubeflow_pod_labels(kind, body)}}},
            "status": {},
        }

    def _kaito_admit(self, ns: str, body: dict[str, Any]) -> str | None:
        """Kaito's webhook (the tuning ConfigMap must exist), then its controller's Job (the pods
        the provider reads logs from)."""
        c = self.cluster
        name, config = body["metadata"]["name"], (body.get("tuning") or {}).get("config")
        if ("configmaps", ns, config) not in c.objects:
            return f'ConfigMap "{config}" specified in \'config\' not found in namespace "{ns}"'
        c.statuses.setdefault(name, kaito_statuses())
        c.objects[("jobs", ns, name)] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns, "labels": {"job-name": name}},
            "spec": {"template": {"metadata": {"labels": {"job-name": name}}}},
            "status": {},
        }
        return None


class _Server(LoopbackServer):
    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(_Handler)
        self.cluster = cluster


@contextmanager
def fake_cluster(cluster: FakeCluster | None = None) -> Iterator[tuple[FakeCluster, str]]:
    """Serve ``cluster`` on loopback for the block: ``(cluster, url)``."""
    cluster = cluster or FakeCluster()
    server = _Server(cluster)
    # serving()'s loop polls for shutdown every 0.5 s; this fake ends with every test, so poll faster.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield cluster, server.url
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def api_client_factory(url: str) -> Any:
    """An ``ApiClient`` factory configured to the fake (no urllib3 retries: the provider's policy retries)."""

    def make() -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = url
        configuration.retries = False
        return client.ApiClient(configuration)

    return make


def make_provider(url: str, tmp: Path, clock: Any, **settings: Any) -> Any:
    """A ``KubernetesProvider`` wired to the fake at ``url``: its home under ``tmp``, ``clock``'s
    (a ``FakeClock``) sleep and time; ``settings`` set to None are left at their defaults."""
    from anytune.providers.kubernetes import KubernetesProvider, KubernetesSettings

    return KubernetesProvider(
        KubernetesSettings(**{k: v for k, v in settings.items() if v is not None}),
        api_client_factory=api_client_factory(url),
        home=tmp / "home",
        sleep=clock.sleep,
        clock=clock.clock,
    )
