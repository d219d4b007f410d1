"""The retry policy every adapter uses for calls that are safe to repeat.

Reads (get, list, events, checkpoints, file content) are retried on 408, 429 and 5xx answers and on
connection errors and timeouts; what counts as "transient" is the adapter's call (it passes a
predicate), because only the adapter knows its SDK's exception classes.  Writes are not retried
through here blindly: an adapter that creates something wraps its attempt so that an ambiguous
failure is looked up before the next try (:mod:`anytune._create_once`).

Why these rules:

* The server knows best when to come back: ``Retry-After`` (seconds or an HTTP date) and the
  non-standard ``retry-after-ms`` replace our own back-off when present, and are honoured in full
  as long as the retry still starts before the deadline; a cap on them is one setting,
  ``retry_after_max``, the same on every adapter (:class:`RetrySettings`).
* Otherwise exponential back-off with jitter, so that many clients throttled at once do not come
  back in lock-step; our own back-off is capped (``max_backoff``).
* A total deadline bounds the whole call: a caller waits minutes at most, never hours, and a
  retry that could only start after the deadline is not started (the call ends with the last
  error, a throttled one included).
* Sleep, clock and randomness are injectable, so tests run in milliseconds and deterministically.

The pure helpers (:func:`parse_retry_after`, :meth:`RetryPolicy.delay`, :meth:`RetryPolicy.gives_up`)
carry all decisions; :func:`retry_call` only wires them into tenacity.  tenacity is imported on
first use so that ``import anytune`` stays light.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "RetryPolicy",
    "RetrySettings",
    "is_retryable_status",
    "is_transient_api_error",
    "parse_retry_after",
    "retry_call",
]

T = TypeVar("T")

logger = logging.getLogger("anytune.retry")


def is_retryable_status(status_code: int) -> bool:
    """Whether an HTTP status is worth retrying: 408 (request timeout), 429 (throttled) or any 5xx.

    A 429 that means "quota exhausted" rather than "slow down" looks the same on the wire; the
    adapter's predicate tells them apart from the error body.
    """
    return status_code in (408, 429) or 500 <= status_code <= 599


def parse_retry_after(headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait, or ``None`` when it gave no usable hint.

    Reads ``retry-after-ms`` (milliseconds, non-standard but sent by OpenAI and Azure) first, then
    ``Retry-After`` as seconds (fractions allowed), then ``Retry-After`` as an HTTP date.  Header
    names are matched case-insensitively.  A date in the past means "now" (0.0); negative, NaN or
    infinite values are ignored.

    Args:
        headers: the response headers (any mapping; httpx headers work as they are).
        now: wall clock in seconds since the epoch, for HTTP dates.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("x-ms-retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value / divisor
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 7231 dates are GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, when.timestamp() - now())


def is_transient_api_error(exc: BaseException) -> bool:
    """Whether an HTTP SDK's exception (``openai`` and alike) is worth retrying: a retryable
    ``status_code`` (:func:`is_retryable_status`), or no answer at all (connection failure, timeout)."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return is_retryable_status(status)
    return type(exc).__name__ in ("APIConnectionError", "APITimeoutError")


def retry_after_of(exc: BaseException) -> float | None:
    """The server's Retry-After hint carried by an SDK exception's ``response``, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return parse_retry_after(headers) if headers is not None else None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Attributes:
        max_attempts: attempts in all, the first one included.
        initial_backoff: seconds before the first retry when the server gives no hint.
        multiplier: growth of the back-off per retry.
        max_backoff: cap on our own back-off; also on server hints when ``retry_after_max`` is None.
        jitter: fraction of the back-off taken off at random (0: none, 1: "full jitter").
        deadline: seconds from the first attempt after which no retry is started.
        retry_after_max: cap on a server's hint; ``math.inf`` honours it in full (the deadline
            still bounds the call); None (the default, as before): ``max_backoff``.
            :meth:`RetrySettings.retry_policy` sets it from the ``retry_after_max`` setting.
    """

    max_attempts: int = 6
    initial_backoff: float = 0.5
    multiplier: float = 2.0
    max_backoff: float = 30.0
    jitter: float = 0.5
    deadline: float = 300.0
    retry_after_max: float | None = None

    def backoff(self, retry: int, rand: float) -> float:
        """Back-off before retry number ``retry`` (0-based) with ``rand`` in [0, 1) as the jitter draw."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, retry))
        return base * (1.0 - self.jitter * min(max(rand, 0.0), 1.0))

    def delay(self, retry: int, *, hint: float | None, rand: float) -> float:
        """Seconds to sleep before retry number ``retry``: the server's hint when it gave one (a
        server that names a time knows more than our guess), capped by ``retry_after_max``; else
        the jittered back-off, capped by ``max_backoff``.  Whether the retry still starts before
        the deadline is :meth:`gives_up`'s call."""
        if hint is None:
            return max(0.0, min(self.backoff(retry, rand), self.max_backoff))
        cap = self.max_backoff if self.retry_after_max is None else self.retry_after_max
        return max(0.0, min(hint, cap))

    def gives_up(self, attempts: int, elapsed: float, upcoming: float) -> bool:
        """Whether to stop after ``attempts`` attempts, ``elapsed`` seconds, with ``upcoming`` seconds
        of sleep ahead: a retry that would start past the deadline is not worth sleeping for."""
        return attempts >= self.max_attempts or elapsed + upcoming > self.deadline


class RetrySettings(BaseModel):
    """The retry settings every adapter shares, with one name and one meaning (a settings mixin).

    ``retry_after_max``: cap (seconds) on a server's ``Retry-After`` hint.  Unset, a hint is honoured
    in full as long as the retry still starts before the adapter's deadline; past it, the call ends
    with the throttled error instead of sleeping.

    Profiles written before this setting existed keep their meaning: an adapter whose older setting
    capped every wait, hints included (``_WAIT_CAP_SETTING``: ``max_backoff``, Azure ML's
    ``retry_backoff_max``), still caps hints with it when it is set and ``retry_after_max`` is not.
    """

    #: The adapter's older setting that capped every wait, server hints included (None: none).
    _WAIT_CAP_SETTING: ClassVar[str | None] = None

    retry_after_max: float | None = Field(
        None, gt=0, description="cap (s) on a server's Retry-After; unset: honoured up to the deadline"
    )

    @property
    def hint_cap(self) -> float:
        """Seconds a server's hint is capped at (``math.inf``: honoured up to the deadline)."""
        if self.retry_after_max is not None:
            return self.retry_after_max
        old = self._WAIT_CAP_SETTING
        if old is not None and old in self.model_fields_set:
            return float(getattr(self, old))
        return math.inf

    def retry_policy(self, **fields: Any) -> RetryPolicy:
        """A :class:`RetryPolicy` of ``fields`` (attempts, deadline, back-off) with this hint cap."""
        return RetryPolicy(**fields, retry_after_max=self.hint_cap)


def retry_call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    retry_on: Callable[[BaseException], bool],
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    what: str = "call",
) -> T:
    """Call ``fn`` until it succeeds, fails with an error ``retry_on`` rejects, or the policy gives up.

    The last exception is re-raised unchanged (translation into anytune's errors is the adapter's
    job, at its boundary).

    Args:
        fn: the call; it must be safe to repeat.
        policy: limits and back-off.
        retry_on: whether an exception is transient.
        retry_after: the server's hint carried by an exception (seconds), if any.
        sleep: how to wait (inject a recorder in tests).
        clock: monotonic clock for the deadline.
        rand: jitter source in [0, 1).
        what: what is being retried, for the log line.
    """
    import tenacity

    start = clock()

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        hint = retry_after(exc) if exc is not None else None
        return policy.delay(state.attempt_number - 1, hint=hint, rand=rand())

    def stop(state: tenacity.RetryCallState) -> bool:
        return policy.gives_up(state.attempt_number, clock() - start, state.upcoming_sleep)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.info(
            "%s failed (%s); retry %d in %.2f s",
            what,
            type(exc).__name__ if exc else "?",
            state.attempt_number,
            state.upcoming_sleep,
        )

    retrying = tenacity.Retrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(retry_on),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
