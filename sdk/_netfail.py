"""What kind of network failure an exception is, and which host it was trying to reach.

Every provider SDK wraps the operating system's error in its own classes (openai's
``APIConnectionError`` over httpx's ``ConnectError`` over ``ConnectionRefusedError``; azure-core's
``ServiceRequestError`` holding urllib3's ``NameResolutionError`` over ``socket.gaierror``...).
:func:`classify` walks that chain (``__cause__``, ``__context__`` and the attributes SDKs keep the
inner exception in) and names the failure the user can act on: offline, DNS, refused, TLS, timeout.
Foreign classes are recognised by name, never imported, so the core stays free of the SDKs.

Pure: no I/O, no SDK import. Adapters use :func:`classify` to word their connection errors and
:attr:`NetFailure.permanent` to stop retrying what a retry a few seconds later cannot fix.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["NetFailure", "NetKind", "classify", "host_of"]

NetKind = Literal["offline", "dns", "refused", "tls", "timeout", "dropped", "connect"]

#: What each kind means to the user, after "cannot reach HOST: ".
_REASONS: dict[str, str] = {
    "offline": "the network is unreachable (offline?)",
    "dns": "DNS lookup failed (offline, or a wrong host name?)",
    "refused": "connection refused (nothing listens there: check the URL and port, or a proxy/firewall)",
    "tls": "TLS/SSL error (a proxy intercepting HTTPS, or a certificate that is not trusted?)",
    "timeout": "no answer in time (timeout)",
    "dropped": "the connection was dropped",
    "connect": "connection failed",
}

#: Kinds a quick retry does not fix: the next attempt, seconds later, fails the same way.
_PERMANENT = frozenset({"offline", "dns", "refused", "tls"})

_OFFLINE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENETUNREACH", "EHOSTUNREACH", "ENETDOWN") if hasattr(errno, name)
)

# The operating systems' own words, for SDKs that keep only the text of the error they caught.
_TEXT_RULES: tuple[tuple[NetKind, re.Pattern[str]], ...] = (
    ("tls", re.compile(r"CERTIFICATE_VERIFY_FAILED|\[SSL[:\]]|SSLError|WRONG_VERSION_NUMBER", re.I)),
    (
        "dns",
        re.compile(
            r"Name or service not known|nodename nor servname|getaddrinfo failed|"
            r"Temporary failure in name resolution|No address associated with hostname|Failed to resolve",
            re.I,
        ),
    ),
    ("offline", re.compile(r"Network is unreachable|No route to host|\[Errno (101|113)\]", re.I)),
    ("refused", re.compile(r"\[Errno (111|61)\]|\[WinError 10061\]", re.I)),
)

# Class names (any module) that mean "this was a connection-level failure" without saying which.
_TIMEOUT_NAME = re.compile(r"Timeout", re.I)
_CONNECT_NAMES = frozenset(
    {
        "APIConnectionError",
        "ConnectError",
        "ConnectionError",
        "NewConnectionError",
        "MaxRetryError",
        "ServiceRequestError",
        "TransportError",
        "NetworkError",
        "ProxyError",
    }
)
#: ... and those that mean the connection was made, then lost.
_DROPPED_NAMES = frozenset({"ProtocolError", "RemoteProtocolError", "ReadError", "WriteError", "ServiceResponseError"})
_DNS_NAMES = frozenset({"NameResolutionError"})
_TLS_NAMES = frozenset({"SSLError", "SSLCertVerificationError"})


@dataclass(frozen=True)
class NetFailure:
    """A network failure: its kind and the host it was trying to reach (None when unknown)."""

    kind: NetKind
    host: str | None = None

    @property
    def permanent(self) -> bool:
        """Whether retrying within seconds is pointless (no network, no such host, refused, TLS)."""
        return self.kind in _PERMANENT

    @property
    def reason(self) -> str:
        """What went wrong, in words: "DNS lookup failed (offline, or a wrong host name?)"."""
        return _REASONS[self.kind]

    def describe(self) -> str:
        """One line for the user: ``cannot reach api.openai.com: DNS lookup failed (...)``."""
        return f"cannot reach {self.host or 'the service'}: {self.reason}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything below it: causes, contexts, and SDKs' inner exceptions."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 64:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__]
        inner += [getattr(current, name, None) for name in ("inner_exception", "reason", "original_error")]
        inner += list(current.args)
        todo += [e for e in inner if isinstance(e, BaseException) and id(e) not in seen]


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _kind_of(exc: BaseException) -> NetKind | None:
    """The kind one exception shows on its own (its type, errno, class name), or None."""
    names = _names(exc)
    if isinstance(exc, ssl.SSLError) or names & _TLS_NAMES:
        return "tls"
    if isinstance(exc, socket.gaierror) or names & _DNS_NAMES:
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno in _OFFLINE_ERRNOS:
        return "offline"
    if isinstance(exc, TimeoutError) or any(_TIMEOUT_NAME.search(n) for n in names):
        return "timeout"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError) or names & _DROPPED_NAMES:
        return "dropped"
    return None


#: The most telling kind wins when the chain shows several (a TLS error inside a timeout wrapper...).
_PRIORITY: tuple[NetKind, ...] = ("tls", "dns", "offline", "refused", "timeout", "dropped")


def _url_host(url: object) -> str | None:
    text = str(url)
    if "://" not in text:
        return text or None
    try:
        return urlsplit(text).hostname
    except ValueError:
        return None


def _host_of_one(exc: BaseException) -> str | None:
    try:  # httpx's ``request`` property raises when the exception was made without one
        request = getattr(exc, "request", None)
    except RuntimeError:
        request = None
    url = getattr(request, "url", None)
    if url is not None:
        host = getattr(url, "host", None)
        return str(host) if host else _url_host(url)
    for holder in ("conn", "pool"):  # urllib3: NewConnectionError.conn, MaxRetryError.pool
        host = getattr(getattr(exc, holder, None), "host", None)
        if isinstance(host, str) and host:
            return host
    return None


def host_of(exc: BaseException) -> str | None:
    """The host the failed request was for, from the first exception in the chain that says."""
    return next((h for h in map(_host_of_one, _chain(exc)) if h), None)


def classify(exc: BaseException, *, url: str | None = None) -> NetFailure | None:
    """The network failure ``exc`` (or anything chained below it) is, or None when it is not one.

    Args:
        exc: an SDK's exception.
        url: the service's URL (or host), used when no exception in the chain names the host.
    """
    chain = list(_chain(exc))
    kinds = {k for k in map(_kind_of, chain) if k is not None}
    kind = next((k for k in _PRIORITY if k in kinds), None)
    if kind is None:
        text = " ".join(str(e) for e in chain)
        kind = next((k for k, pattern in _TEXT_RULES if pattern.search(text)), None)
    if kind is None and any(_names(e) & _CONNECT_NAMES for e in chain):
        kind = "connect"
    if kind is None:
        return None
    return NetFailure(kind, host_of(exc) or (_url_host(url) if url else None))
