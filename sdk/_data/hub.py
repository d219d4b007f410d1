"""Rows of a Hugging Face Hub dataset: ``org/name`` with a config, a revision and a sliced split.

:func:`open_hub` checks the dataset before anything is read or created, and returns a
:class:`HubSource`, a :class:`~anytune._data.sources.Source` whose rows come from the ``datasets``
library. The checks, in order:

1. Pre-flight: one ``HfApi.dataset_info`` call with the base-model check's short timeout
   (:data:`~anytune._base_model.DEFAULT_HUB_TIMEOUT`, no retry); for a gated dataset, one
   ``auth_check`` with the token. A missing, private or gated dataset, a revision that does not
   exist, or a Hub that cannot be reached (named by :func:`anytune._netfail.classify`) fails here.
   Offline (``HF_HUB_OFFLINE``), the look-up is skipped and the local ``datasets`` cache must hold
   the dataset.
2. The config and split: ``datasets.load_dataset_builder`` resolves the data files (no data is
   downloaded); an unknown config or split fails, listing those that exist.

Split slices are ``datasets``' syntax: ``train``, ``train[:4096]``, ``train[4096:4224]``,
``train[:10%]``, ``train[-100:]``, ``train[10%:20%]``. The rule for reading them:

* **streamed** (``IterableDataset.skip/take``: nothing is downloaded beyond the rows read) when
  the bounds are absolute without the split's size: no slice, or non-negative row numbers;
  percentages and negative bounds are streamed too when the dataset's metadata gives the split's
  size;
* **prepared** (``download_and_prepare``: the split is downloaded into the ``datasets`` cache as
  Arrow files, memory-mapped, then read by batch) when the size is needed and unknown, and always
  offline (the cache is what offline reads).

Either way memory does not grow with the split's size. Locations name the dataset and split and
number rows from 1 in the split, not the slice: the first row of ``train[4096:4224]`` is
``org/name[train]:row 4097``.

``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are read by huggingface_hub and ``datasets``
themselves (the pre-flight reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` now, as the base-model
check does). The token is registered for redaction and never appears in a message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from anytune._base_model import (
    DEFAULT_HUB_TIMEOUT,
    describe_unreachable,
    hub_endpoint,
    hub_host,
    hub_offline,
)
from anytune._data.sources import Location, Row, Source
from anytune._retry import RetryPolicy, is_retryable_status
from anytune.errors import (
    AnytuneError,
    ConfigError,
    DataValidationError,
    MissingDependencyError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
    ServiceUnavailableError,
)

__all__ = ["HubSource", "SplitSlice", "open_hub", "parse_split"]

PROVIDER: Final = "huggingface"
_BATCH: Final = 1024
_SPLIT: Final = re.compile(r"(?P<name>[\w][\w.-]*)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?")
_SPLIT_HINT: Final = (
    "a split name with an optional slice: train, train[:4096], train[4096:4224], train[:10%], train[-100:]"
)


# -- split slices --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitSlice:
    """A split and its slice, as written: ``train[4096:4224]`` → ``("train", "4096", "4224")``."""

    name: str
    start: str | None = None
    stop: str | None = None

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.name
        return f"{self.name}[{self.start or ''}:{self.stop or ''}]"

    @property
    def needs_size(self) -> bool:
        """Whether the bounds mean rows only once the split's size is known (percent, negative)."""
        return any(b is not None and (b.endswith("%") or b.startswith("-")) for b in (self.start, self.stop))

    def bounds(self, size: int | None) -> tuple[int, int | None]:
        """``(first, end)`` rows (0-based, end excluded, None: to the split's end), as ``datasets``
        computes them: percentages rounded to the closest row, negative bounds from the end, clamped."""

        def absolute(bound: str | None, default: int | None) -> int | None:
            if bound is None:
                return default
            if bound.endswith("%"):
                assert size is not None
                value = round(int(bound[:-1]) * size / 100)
            else:
                value = int(bound)
            if value < 0:
                assert size is not None
                value += size
            value = max(value, 0)
            return value if size is None else min(value, size)

        first = absolute(self.start, 0)
        assert first is not None
        return first, absolute(self.stop, size)


def parse_split(text: str, *, field: str | None = "split") -> SplitSlice:
    """``text`` as a split with an optional slice in ``datasets``' syntax.

    Raises:
        ConfigError: not a split of that syntax (a combination with ``+`` included: one split at a
            time), a percentage over 100, or row bounds that select nothing (``train[10:5]``).
    """
    found = _SPLIT.fullmatch(text.strip())
    if found is None:
        also = " (one split at a time: no '+')" if "+" in text else ""
        raise ConfigError(f"split {text!r} is not {_SPLIT_HINT}{also}", field=field)
    start, stop = found["start"], found["stop"]
    for bound in (start, stop):
        if bound is not None and bound.endswith("%") and abs(int(bound[:-1])) > 100:
            raise ConfigError(f"split {text!r}: a percentage is at most 100", field=field)
    wanted = SplitSlice(found["name"], start, stop)
    if not wanted.needs_size and start is not None and stop is not None and int(stop) <= int(start):
        raise ConfigError(f"split {text!r} selects no rows: its end is not after its start", field=field)
    return wanted


# -- the source ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubSource(Source):
    """A split of a Hub dataset, checked and ready to read.

    Attributes:
        path: the dataset id (``org/name``).
        name: ``org/name[split]``, as locations name it.
        split: the split with its slice, as given (``train[:4096]``).
        config: the config (None: the dataset's default).
        revision: the branch, tag or commit (None: ``main``).
        rows_in_split: the split's size when the dataset's metadata gives it.
        streaming: whether :meth:`rows` streams (see the module's docstring).
        offline: whether it is read offline, from the ``datasets`` cache.
    """

    config: str | None = None
    revision: str | None = None
    rows_in_split: int | None = None
    streaming: bool = True
    offline: bool = False
    _slice: SplitSlice = field(default=SplitSlice("train"), repr=False)
    _builder: Any = field(default=None, repr=False, compare=False)

    def rows(self) -> Iterator[Row]:
        """Every row of the slice, in order, numbered in the split.

        Raises:
            DataValidationError: the split is empty, or the slice starts past its end (both name the
                split and its size).
            ServiceUnavailableError, PermissionDeniedError: the Hub failed while the rows were read.
        """
        with _hub_errors(self.path, self.revision, offline=self.offline, doing="reading"):
            if self.streaming:
                first, end = self._slice.bounds(self.rows_in_split)
                stream = self._builder.as_streaming_dataset(split=self._slice.name)
                stream = stream.skip(first) if first else stream
                stream = stream.take(end - first) if end is not None else stream
                yield from self._read(lambda: self._numbered(stream.iter(batch_size=_BATCH), first))
                return
            dataset = self._prepared()
            size = len(dataset)
            first, stop = self._slice.bounds(size)
            end = size if stop is None else stop
            self._check_some(first, max(end - first, 0), size)
            part = dataset.select(range(first, end)) if (first, end) != (0, size) else dataset
            yield from self._numbered(part.iter(batch_size=_BATCH), first)

    def _read(self, rows: Callable[[], Iterator[Row]]) -> Iterator[Row]:
        """``rows()``; a failure of ``datasets`` or pyarrow to read the data names the split and the last row read."""
        import datasets
        import pyarrow as pa

        last = "before its first row"
        try:
            for row in rows():
                last = f"after {row[0]}"
                yield row
        except (datasets.exceptions.DatasetsError, pa.ArrowException, RuntimeError) as exc:
            cause = exc.__cause__ or exc
            raise DataValidationError(
                f"split {self._slice.name!r} of dataset {self.path} cannot be read ({last}): "
                f"{type(cause).__name__}: {cause}"
            ) from exc

    def _prepared(self) -> Any:
        """The split, downloaded into the ``datasets`` cache (or found there) as memory-mapped Arrow.

        The download is retried on the Hub's 5xx answers with the shared policy: huggingface_hub
        retries 429s and network failures of the data files' download, not 5xx, where one 500
        failed the whole read. A download that fails half-way is safe to repeat (``datasets`` keeps
        the files done and takes a lock)."""
        import datasets

        from anytune._retry import retry_call

        try:
            retry_call(
                self._builder.download_and_prepare,
                policy=PREPARE_RETRIES,
                retry_on=_transient,
                retry_after=lambda exc: _retry_after(getattr(_hub_http_error(exc), "response", None)),
                sleep=lambda seconds: time.sleep(seconds),  # looked up at each wait, so tests can record them
                what=f"downloading dataset {self.path}",
            )
            return self._builder.as_dataset(split=self._slice.name)
        except datasets.exceptions.DatasetsError as exc:
            cause = exc.__cause__ or exc
            raise DataValidationError(
                f"split {self._slice.name!r} of dataset {self.path} cannot be read: {type(cause).__name__}: {cause}"
            ) from exc

    def _numbered(self, batches: Iterator[dict[str, list[Any]]], first: int) -> Iterator[Row]:
        number = first
        for batch in batches:
            names = list(batch)
            count = len(batch[names[0]]) if names else 0
            for i in range(count):
                number += 1
                yield Location(self.name, "row", number), {n: batch[n][i] for n in names}
        self._check_some(first, number - first, self.rows_in_split if number == first else None)

    def _check_some(self, first: int, read: int, size: int | None) -> None:
        if read:
            return
        split = self._slice.name
        if first == 0:
            raise DataValidationError(f"split {split!r} of dataset {self.path} is empty: no rows to read")
        has = f"has {size:,} rows" if size is not None else f"has no row {first + 1:,}"
        raise DataValidationError(f"split {split!r} of dataset {self.path} {has}: {self.split} starts past its end")


#: Retries of a split's download into the ``datasets`` cache (:meth:`HubSource._prepared`).
PREPARE_RETRIES: Final = RetryPolicy(max_attempts=5, initial_backoff=1.0, max_backoff=16.0, deadline=60.0)


def _hub_http_error(exc: BaseException) -> Any:
    """The Hub's HTTP error in ``exc``'s chain (``datasets`` wraps some), or None."""
    import huggingface_hub.errors as hub_errors

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, hub_errors.HfHubHTTPError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _transient(exc: BaseException) -> bool:
    """Whether a download failed for a reason worth another try that nothing below retried: the Hub
    answering 5xx. (huggingface_hub already retries 429s, honouring their hint, and dropped
    connections and timeouts: retrying those again would multiply the waits.)"""
    http = _hub_http_error(exc)
    status = http.response.status_code if http is not None and http.response is not None else None
    return status is not None and status >= 500 and is_retryable_status(status)


# -- the pre-flight ------------------------------------------------------------------------------
def _dataset_url(repo_id: str) -> str:
    return f"{hub_endpoint()}/datasets/{repo_id}"


def _token() -> str | None:
    """huggingface_hub's token (``HF_TOKEN``, then the cached login), registered for redaction."""
    from huggingface_hub import get_token

    from anytune._secrets import register_secret

    token = get_token()
    if token:
        register_secret(token)
    return token


def _translate(
    exc: Exception, repo_id: str, revision: str | None, host: str, offline: bool = False, doing: str = "looking up"
) -> AnytuneError | None:
    """The anytune error for a failed look-up or read of a dataset (None: not the Hub's or the transport's)."""
    import huggingface_hub.errors as hub_errors

    if offline and isinstance(exc, (hub_errors.OfflineModeIsEnabled, ConnectionError)):
        return _offline_error(repo_id)  # datasets: "Couldn't reach 'org/name' on the Hub (OfflineModeIsEnabled)"
    if isinstance(exc, ConnectionError) and isinstance(exc.__cause__, hub_errors.HfHubHTTPError):
        # datasets gave up retrying a read the Hub answered with 429 or 503 ("Server Disconnected"):
        # the Hub's answer is the reason, not the connection.
        exc = exc.__cause__

    if isinstance(exc, hub_errors.GatedRepoError):
        return PermissionDeniedError(
            f"dataset {repo_id} is gated: accept its terms on {_dataset_url(repo_id)} with your account, then "
            "set HF_TOKEN (or `hf auth login`) to a token of that account",
            provider=PROVIDER,
            status_code=403,
        )
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return ConfigError(f"dataset {repo_id} has no revision {revision!r} on {host}", field="revision")
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        if _token_state() is None:
            return ConfigError(
                f"dataset {repo_id} not found on {host}, or it is private and no token is set: a private dataset "
                "needs HF_TOKEN (or `hf auth login`) of an account that can read it",
                field="source",
            )
        return ConfigError(
            f"dataset {repo_id} not found on {host} (check the id; a private dataset needs a token of an "
            "account that can read it)",
            field="source",
        )
    if isinstance(exc, hub_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            return ConfigError(
                f"dataset {repo_id}: {host} refused the token: set HF_TOKEN to a valid one (or `hf auth login`)",
                field="source",
            )
        if status == 403:
            return PermissionDeniedError(
                f"dataset {repo_id}: {host} refused access with this token", provider=PROVIDER, status_code=status
            )
        if status == 429:
            wait = _retry_after(exc.response)
            when = f"after {wait:g} s" if wait is not None else "in a while"
            return RateLimitError(
                f"{doing} dataset {repo_id}: {host} is rate-limiting this client and still was after retries; "
                f"try again {when}",
                provider=PROVIDER,
                status_code=status,
                retry_after=wait,
            )
        family = ServiceUnavailableError if status is None or status >= 500 else ProviderError
        return family(f"{doing} dataset {repo_id} on {host} failed", provider=PROVIDER, status_code=status)
    import httpx2

    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        said, offline = describe_unreachable(host, exc)
        said += "; this machine looks offline" if offline else ""
        hint = (
            "check the connection (or HF_ENDPOINT); a dataset read once is in the datasets cache: set HF_HUB_OFFLINE=1"
        )
        return ServiceUnavailableError(f"{doing} dataset {repo_id}: {said}. {hint}", provider=PROVIDER)
    return None


def _retry_after(response: Any) -> float | None:
    """The Hub's hint of when to come back: ``Retry-After``, or its rate-limit headers' reset."""
    from huggingface_hub.utils import parse_ratelimit_headers  # type: ignore[attr-defined]  # documented, not in __all__

    from anytune._retry import parse_retry_after

    if response is None:
        return None
    wait = parse_retry_after(response.headers)
    if wait is None:
        info = parse_ratelimit_headers(response.headers)
        wait = float(info.reset_in_seconds) if info is not None else None
    return wait


def _token_state() -> str | None:
    from huggingface_hub import get_token

    return get_token()


#: ``datasets``' own retries around a streamed read, turned off. Each read already goes through
#: huggingface_hub's back-off (5 retries of 429/5xx answers and dropped connections: about 23 s in
#: all, or the Hub's ``Retry-After`` in full); ``datasets`` multiplied that by 20 attempts 60 s apart
#: on a throttled read, which held a read for about half an hour before saying anything. One attempt
#: of ``datasets`` (no wait after it) leaves the official client's back-off as the one policy.
STREAMING_RETRIES: Final[dict[str, int]] = {
    "STREAMING_READ_MAX_RETRIES": 1,
    "STREAMING_READ_RETRY_INTERVAL": 0,
    "STREAMING_READ_SERVER_UNAVAILABLE_RETRY_INTERVAL": 0,
    "STREAMING_READ_RATE_LIMIT_RETRY_INTERVAL": 0,
    "STREAMING_OPEN_MAX_RETRIES": 1,
    "STREAMING_OPEN_RETRY_INTERVAL": 0,
}


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, offline: bool = False, doing: str = "looking up") -> Iterator[None]:
    """The boundary of every call into huggingface_hub and ``datasets`` for one dataset.

    With ``offline``, both libraries run offline inside the block: they read ``HF_HUB_OFFLINE``
    once, at their import, and this process may have imported them before it was set. ``datasets``'
    retries are bounded inside the block (:data:`STREAMING_RETRIES`). ``doing`` says what failed in
    the messages (``looking up``, ``reading``).
    """
    from anytune._boundary import boundary

    host = hub_host(hub_endpoint())
    with contextlib.ExitStack() as stack:
        try:
            import datasets.config as config
        except ImportError:  # a look-up before datasets is needed: it says what to install when it is
            config = None
        for name, value in STREAMING_RETRIES.items():
            if hasattr(config, name):  # the knobs of the datasets versions that have them
                stack.enter_context(_patched(config, name, value))
        if offline:
            from huggingface_hub import constants

            for module in (config, constants):
                if module is not None:
                    stack.enter_context(_patched(module, "HF_HUB_OFFLINE", True))
        stack.enter_context(boundary(lambda exc: _translate(exc, repo_id, revision, host, offline, doing)))
        yield


@contextlib.contextmanager
def _patched(module: Any, name: str, value: object) -> Iterator[None]:
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def _import_datasets() -> Any:
    try:
        import datasets
        import huggingface_hub  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("datasets", "data", "reading a Hugging Face Hub dataset") from exc
    from anytune._secrets import install_log_filter

    for name in ("huggingface_hub", "datasets"):
        install_log_filter(logging.getLogger(name))
    return datasets


def _preflight(repo_id: str, revision: str | None, timeout: float) -> Any:
    """``dataset_info`` (and ``auth_check`` for a gated dataset): what the Hub says of it."""
    from huggingface_hub import HfApi

    from anytune._version import __version__

    token = _token()
    api = HfApi(endpoint=hub_endpoint(), token=token, library_name="anytune", library_version=__version__)
    with _hub_errors(repo_id, revision):
        info = api.dataset_info(repo_id, revision=revision, timeout=timeout)
        if getattr(info, "gated", False):
            api.auth_check(repo_id, repo_type="dataset")
    return info


def _split_sizes(info: Any, config: str | None) -> dict[str, int]:
    """Split → rows, from the dataset card's ``dataset_info`` metadata, when it says (else empty)."""
    card = getattr(info, "card_data", None)
    meta = card.get("dataset_info") if card is not None and hasattr(card, "get") else None
    entries = meta if isinstance(meta, list) else [meta] if isinstance(meta, dict) else []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("config_name", "default") != (config or "default"):
            continue
        splits = entry.get("splits")
        if isinstance(splits, list):
            return {
                str(s["name"]): int(s["num_examples"])
                for s in splits
                if isinstance(s, dict) and "name" in s and isinstance(s.get("num_examples"), int)
            }
    return {}


def _configs(datasets: Any, repo_id: str, revision: str | None) -> list[str]:
    try:
        return list(datasets.get_dataset_config_names(repo_id, revision=revision))
    except Exception:  # only for a message: a failure here must not hide the first one
        return []


def _builder(datasets: Any, repo_id: str, config: str | None, revision: str | None, offline: bool) -> Any:
    """The dataset's builder (data files resolved, nothing downloaded), an unknown config listing those that exist."""
    try:
        with _hub_errors(repo_id, revision, offline=offline):
            return datasets.load_dataset_builder(repo_id, config, revision=revision)
    except ValueError as exc:
        text = str(exc)
        if "BuilderConfig" in text or "Config name is missing" in text or "config" in text.lower():
            names = _configs(datasets, repo_id, revision)
            listed = f"; its configs: {', '.join(names)}" if names else ""
            what = f"has no config {config!r}" if config else "needs a config"
            raise ConfigError(f"dataset {repo_id} {what}{listed} (--config)", field="config") from None
        raise DataValidationError(f"dataset {repo_id} cannot be read: {text}") from None
    except datasets.exceptions.DatasetNotFoundError as exc:
        if hub_offline():
            raise _offline_error(repo_id) from None
        raise ConfigError(f"dataset {repo_id} cannot be read: {exc}", field="source") from None
    except (FileNotFoundError, datasets.exceptions.DatasetsError) as exc:
        raise DataValidationError(f"dataset {repo_id} cannot be read: {exc}") from None


def _offline_error(repo_id: str) -> ConfigError:
    return ConfigError(
        f"offline (HF_HUB_OFFLINE is set) and dataset {repo_id} is not in the local datasets cache: read it once "
        "while online, or give a local file",
        field="source",
    )


def _splits_of(builder: Any) -> list[str]:
    files = getattr(builder.config, "data_files", None)
    if files:
        return [str(s) for s in files]
    splits = getattr(builder.info, "splits", None)
    return [str(s) for s in splits] if splits else []


def open_hub(
    repo_id: str,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    timeout: float = DEFAULT_HUB_TIMEOUT,
) -> HubSource:
    """Check the Hub dataset ``repo_id`` and its split, and return it ready to read (module docstring).

    Args:
        repo_id: ``org/name`` (or ``name``).
        split: a split with an optional slice (default ``train``).
        config: the dataset's config (default: its default one).
        revision: a branch, tag or commit (default ``main``).
        timeout: seconds the pre-flight look-up may take.

    Raises:
        ConfigError: no such dataset (or private without a token), no such revision, config or split
            (those that exist are listed), a split that is not ``datasets``' syntax, or offline and
            not cached.
        PermissionDeniedError: gated, and the token has not accepted its terms.
        ServiceUnavailableError: the Hub could not be reached in time (the failure named).
        MissingDependencyError: ``datasets`` is not installed (``anytune[data]``).
    """
    wanted = parse_split(split or "train")
    datasets = _import_datasets()
    offline = hub_offline()
    sizes = {} if offline else _split_sizes(_preflight(repo_id, revision, timeout), config)
    builder = _builder(datasets, repo_id, config, revision, offline)
    splits = _splits_of(builder)
    if splits and wanted.name not in splits:
        raise ConfigError(
            f"dataset {repo_id} has no split {wanted.name!r}; its splits: {', '.join(splits)}", field="split"
        )
    info_splits = getattr(builder.info, "splits", None) or {}
    size = sizes.get(wanted.name)
    if size is None and wanted.name in info_splits:
        size = getattr(info_splits[wanted.name], "num_examples", None) or None
    streaming = not offline and (not wanted.needs_size or size is not None)
    source = HubSource(
        repo_id,
        "hub",
        f"{repo_id}[{wanted.name}]",
        (),
        str(wanted),
        0,
        config=config,
        revision=revision,
        rows_in_split=size,
        streaming=streaming,
        offline=offline,
        _slice=wanted,
        _builder=builder,
    )
    if size is not None:  # known from the metadata: an empty split or a slice past its end fails now
        first, end = wanted.bounds(size)
        source._check_some(first, max((size if end is None else end) - first, 0), size)
    return source
