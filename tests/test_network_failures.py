"""A network failure names the host and its kind (DNS, refused, TLS, offline, timeout), and the
obvious ones fail at once instead of being retried for a minute.

Real sockets on the loopback interface and the real SDKs: a closed port refuses, a plain-text
server breaks the TLS handshake, and a ``.invalid`` host fails its DNS lookup (the lookup itself
is answered here, as the resolver would, so no query leaves the machine).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune._netfail import NetFailure, classify, host_of
from tests.clitools import jobs_in_store, run_cli
from tests.conftest import chat_example, write_jsonl

# -- the classifier, on chains built by hand ---------------------------------------------------------


def _chain(*excs: BaseException) -> BaseException:
    """``excs[0]`` raised from ``excs[1]`` raised from ...: the shape SDKs give their errors."""
    for outer, inner in itertools.pairwise(excs):
        outer.__cause__ = inner
    return excs[0]


def _named(name: str, base: type[Exception] = Exception) -> type[Exception]:
    """A foreign exception class known only by its name (as the SDKs' are to the core)."""
    return type(name, (base,), {})


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            _chain(_named("APIConnectionError")("Connection error."), socket.gaierror(-2, "Name or service not known")),
            "dns",
        ),
        (
            _chain(_named("ConnectError")("x"), ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")),
            "refused",
        ),
        (_chain(_named("ConnectError")("x"), ssl.SSLCertVerificationError("certificate verify failed")), "tls"),
        (_chain(_named("ConnectError")("x"), OSError(errno.ENETUNREACH, "Network is unreachable")), "offline"),
        (_chain(_named("APITimeoutError")("Request timed out.")), "timeout"),
        (_chain(_named("ReadError")("x"), ConnectionResetError(errno.ECONNRESET, "reset")), "dropped"),
        (_chain(_named("RemoteProtocolError")("Server disconnected without sending a response.")), "dropped"),
        # Only the text of the OS error kept (azure-core's messages, requests' wrappers).
        (_named("ServiceRequestError")("Failed to resolve 'x.invalid' ([Errno -2] Name or service not known)"), "dns"),
        (
            _named("ServiceRequestError")("Failed to establish a new connection: [Errno 111] Connection refused"),
            "refused",
        ),
        # A connection error that says nothing more: a generic connection failure, retried as before.
        (_named("ConnectError")("injected connection refused"), "connect"),
    ],
)
def test_classify_names_the_kind(exc: BaseException, kind: str) -> None:
    failure = classify(exc)
    assert failure is not None and failure.kind == kind
    assert failure.permanent == (kind in ("dns", "refused", "tls", "offline"))


def test_inner_exceptions_kept_in_attributes_are_followed() -> None:
    # azure-core keeps urllib3's error in ``inner_exception``; urllib3 keeps its connection in ``conn``.
    conn = type("HTTPSConnection", (), {"host": "ws.api.azureml.ms"})()
    urllib3_error = _named("NameResolutionError")("Failed to resolve")
    urllib3_error.conn = conn  # type: ignore[attr-defined]
    urllib3_error.__cause__ = socket.gaierror(-3, "Temporary failure in name resolution")
    outer = _named("ServiceRequestError")("<urllib3 error>")
    outer.inner_exception = urllib3_error  # type: ignore[attr-defined]
    failure = classify(outer)
    assert failure == NetFailure("dns", "ws.api.azureml.ms")
    assert failure.describe() == "cannot reach ws.api.azureml.ms: DNS lookup failed (offline, or a wrong host name?)"


def test_not_a_network_failure() -> None:
    assert classify(ValueError("bad value")) is None
    assert classify(KeyError("x")) is None
    # The host falls back to the URL the caller knows.
    assert classify(ConnectionRefusedError(111, "refused"), url="https://api.openai.com/v1") == NetFailure(
        "refused", "api.openai.com"
    )
    assert host_of(ValueError()) is None


# -- the real SDKs, real sockets ------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def plain_text_port() -> Iterator[int]:
    """A loopback server that answers plain HTTP whatever it is sent: an HTTPS client's TLS fails."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(2)
    server.close()


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``.invalid`` names fail their lookup as the resolver answers them (RFC 6761), without a query."""
    real_getaddrinfo, real_create_connection = socket.getaddrinfo, socket.create_connection

    def invalid(host: Any) -> bool:
        return isinstance(host, str) and host.endswith(".invalid")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if invalid(host):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if invalid(address[0]):  # the lookup create_connection starts with (before the network guard)
            getaddrinfo(address[0], address[1])
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture
def hub_registry_here(monkeypatch: pytest.MonkeyPatch, closed_port: int, tmp_path: Path) -> None:
    """huggingface_hub fetches its agent registry from its default endpoint on first use: point that
    at the closed port too (its failure is swallowed), so nothing leaves the machine."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / ".agent_harnesses.json"))


def _openai_call(url: str) -> None:
    import openai

    openai.OpenAI(api_key="sk-test", base_url=url, max_retries=0, timeout=5).models.list()


def _hub_call(url: str) -> None:
    import huggingface_hub

    huggingface_hub.HfApi(endpoint=url.removesuffix("/v1"), token="hf_test").whoami()


def _azure_call(url: str) -> None:
    from azure.core import PipelineClient
    from azure.core.pipeline.transport import RequestsTransport
    from azure.core.rest import HttpRequest

    with PipelineClient(base_url=url, transport=RequestsTransport()) as client:
        client.send_request(HttpRequest("GET", url))


@pytest.mark.usefixtures("no_dns", "hub_registry_here")
@pytest.mark.parametrize(
    "call", [_openai_call, _hub_call, _azure_call], ids=["openai", "huggingface_hub", "azure-core"]
)
def test_real_sdk_failures_are_classified(call: Callable[[str], None], closed_port: int, plain_text_port: int) -> None:
    cases = {
        f"http://127.0.0.1:{closed_port}/v1": NetFailure("refused", "127.0.0.1"),
        "http://api.example.invalid/v1": NetFailure("dns", "api.example.invalid"),
        f"https://127.0.0.1:{plain_text_port}/v1": NetFailure("tls", "127.0.0.1"),
    }
    for url, expected in cases.items():
        with pytest.raises(Exception) as info:
            call(url)
        assert classify(info.value) == expected, url


# -- through the CLI: one attempt, one line naming host and kind ----------------------------------


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch, no_dns: None) -> list[Any]:
    """Every connection attempt (on top of the network guard and the resolver)."""
    seen: list[Any] = []
    real = socket.create_connection

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        seen.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return seen


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("http://127.0.0.1:{port}/v1", "cannot reach 127.0.0.1: connection refused"),
        ("http://api.example.invalid/v1", "cannot reach api.example.invalid: DNS lookup failed"),
    ],
    ids=["refused", "dns"],
)
def test_openai_unreachable_fails_at_once_naming_host_and_kind(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    closed_port: int,
    connects: list[Any],
    where: str,
    expected: str,
) -> None:
    pytest.importorskip("openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    monkeypatch.setenv("OPENAI_BASE_URL", where.format(port=closed_port))
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "-p",
        "openai",
        "--base-model",
        "gpt-4o-mini-2024-07-18",
        "--training-file",
        str(train),
    )
    assert result.code == 1
    assert expected in result.err and "after retries" not in result.err
    last = result.err.strip().splitlines()[-1]  # after anytune's own notices (a model's retirement date)
    assert last.startswith("provider error:") and expected in last and "Traceback" not in result.err
    assert result.err.count("cannot reach") == 1
    assert len(connects) == 1  # not retried: seconds later it would fail the same way
    # Nothing reached the service, so no job exists: no submit_failed row clutters `jobs list`.
    assert jobs_in_store(Path(os.environ["ANYTUNE_HOME"])) == 0


@pytest.mark.usefixtures("hub_registry_here")
def test_hub_and_azure_errors_name_host_and_kind(closed_port: int) -> None:
    from anytune.providers.azureml.errors import map_error
    from anytune.providers.huggingface.errors import is_transient, translate_error

    url = f"http://127.0.0.1:{closed_port}/v1"
    with pytest.raises(Exception) as hub:
        _hub_call(url)
    mapped = translate_error(hub.value, provider="huggingface", what="reading the job")
    assert mapped is not None and "cannot reach 127.0.0.1: connection refused" in str(mapped)
    assert not is_transient(hub.value)
    with pytest.raises(Exception) as azure:
        _azure_call(url)
    message = str(map_error(azure.value, action="get job x"))
    assert "get job x: cannot reach 127.0.0.1: connection refused" in message
