"""Create something remote at most once, whatever the network does: the one create-once mechanism.

A create that fails ambiguously (a dropped connection, a timeout, a 408 or 5xx: the server may have
acted before the failure) is never simply sent again. The created thing carries a key (an anytune
idempotency tag, label or client-chosen name), and before any further attempt :func:`create_once`
looks the key up:

* found: that is the result, no second create;
* surely absent: the lookup answered "nothing" and kept answering it over a *settle window*
  (services list what was just written a read or two late): create again;
* unknown (the lookup itself failed): no create. A failed lookup is a read, so it is retried like
  one (the adapter's transient errors, and anytune's :class:`ServiceUnavailableError` and
  :class:`RateLimitError` an adapter's lookup raises after its own retries) within the same
  attempts and deadline; when they run out, the call ends with the fate still unknown, because a
  second create while the first one's fate is unknown is how duplicate jobs (and bills) happen.

A call that ends with the fate unknown raises its last error marked: :func:`outcome_unknown` is
true for it (and for an error the adapter's boundary chains from it), so the job layer records
the job as ``unknown``, to be resolved by a lookup later, never by a blind second create.

Lookups are reads, so the adapter passes a ``lookup`` that retries under its read policy; the
attempts, sleeps and deadline of the create itself follow the same :class:`RetryPolicy` as reads.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from anytune._retry import RetryPolicy, retry_call
from anytune._waiting import wait_until
from anytune.errors import RateLimitError, ServiceUnavailableError

__all__ = ["DEFAULT_SETTLE", "create_once", "outcome_unknown"]

#: Seconds a lookup that finds nothing is repeated before a create is sent again, for a service
#: whose list may lag its writes by a read or two (pass ``settle=DEFAULT_SETTLE``).
DEFAULT_SETTLE = 5.0

_UNKNOWN = "__anytune_outcome_unknown__"

T = TypeVar("T")

logger = logging.getLogger("anytune.create_once")


class _StillAbsent(Exception):
    """The settle window passed and the lookup kept finding nothing."""


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failure raised by :func:`create_once`, or one chained from it (an adapter's
    boundary raises its translation ``from`` the original), left it unknown whether the create
    happened: the lookup failed, so neither "created" nor "surely absent" could be told."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if getattr(current, _UNKNOWN, False):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _mark_unknown(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _UNKNOWN, True)


def _transient_read(exc: BaseException) -> bool:
    """The anytune errors an adapter's lookup raises after its own read retries, still worth
    another look: the service was unavailable or throttled (not out of quota)."""
    return isinstance(exc, ServiceUnavailableError | RateLimitError)


def _settled(
    lookup: Callable[[], T | None], settle: float, sleep: Callable[[float], None], clock: Callable[[], float]
) -> T | None:
    """``lookup``, repeated over ``settle`` seconds while it finds nothing (a list lagging its
    writes); None only when it found nothing to the end. A failing lookup raises at once."""
    if settle <= 0:
        return lookup()
    try:
        return wait_until(
            lookup,
            lambda found: found is not None,
            timeout=settle,
            on_timeout=lambda _: _StillAbsent(),
            initial=settle / 4,
            factor=1.5,
            maximum=settle,
            sleep=sleep,
            clock=clock,
        )
    except _StillAbsent:
        return None


def create_once(
    create: Callable[[], T],
    lookup: Callable[[], T | None],
    *,
    is_ambiguous: Callable[[BaseException], bool],
    retry_on: Callable[[BaseException], bool],
    policy: RetryPolicy,
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
    lookup_retry_on: Callable[[BaseException], bool] | None = None,
    settle: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    what: str = "create",
) -> T:
    """Run ``create`` until it succeeds, never twice for one key.

    Args:
        create: sends the create request once; returns what was created.
        lookup: finds what an earlier attempt created under the same key (None: not found);
            it raises when it cannot tell.
        is_ambiguous: whether a failed create may have happened anyway.
        retry_on: whether a failure (of the create or of the lookup) is worth another attempt;
            an ambiguous failure that is not worth one (a 409 conflict) is still looked up once.
        policy: attempts, back-off and deadline (lookups count as attempts).
        retry_after: the server's wait hint carried by a failure (a :class:`RateLimitError`'s
            ``retry_after`` is used when this gives none).
        lookup_retry_on: whether a failed lookup is worth another attempt; by default what
            ``retry_on`` accepts, and anytune's ``ServiceUnavailableError`` and ``RateLimitError``.
        settle: seconds over which a lookup that finds nothing is repeated before the create is
            sent again (or the call gives up as "not created"); 0 (the default) looks once. A
            service whose list lags its writes needs it: :data:`DEFAULT_SETTLE` suits most.
        sleep, clock, rand: injectable for tests.
        what: for log lines.

    Returns:
        What ``create`` returned, or what ``lookup`` found.

    Raises:
        The last failure (untranslated; the adapter's boundary translates), or the lookup's; when
        the create may have happened, it is marked so that :func:`outcome_unknown` is true for it.
    """
    retry_lookup = lookup_retry_on or (lambda exc: retry_on(exc) or _transient_read(exc))
    unknown = False  # an earlier attempt may have created it
    lookup_failed = False  # the last attempt ended in the lookup, not the create

    def look() -> T | None:
        return _settled(lookup, settle, sleep, clock)

    def attempt() -> T:
        nonlocal unknown, lookup_failed
        lookup_failed = False
        if unknown:
            try:
                found = look()
            except BaseException:
                lookup_failed = True
                raise
            if found is not None:
                logger.info("%s: an earlier attempt went through; using it", what)
                return found
            unknown = False
        try:
            return create()
        except BaseException as exc:
            unknown = is_ambiguous(exc)
            raise

    def worth_another(exc: BaseException) -> bool:
        return retry_lookup(exc) if lookup_failed else retry_on(exc)

    def hint(exc: BaseException) -> float | None:
        given = retry_after(exc)
        return exc.retry_after if given is None and isinstance(exc, RateLimitError) else given

    try:
        return retry_call(
            attempt,
            policy=policy,
            retry_on=worth_another,
            retry_after=hint,
            sleep=sleep,
            clock=clock,
            rand=rand,
            what=what,
        )
    except Exception as exc:
        if lookup_failed:
            logger.warning("%s: the lookup kept failing; whether it was created is unknown", what)
            _mark_unknown(exc)
            raise
        if unknown:
            # The last create may have gone through: look once more before reporting a failure.
            try:
                found = look()
            except Exception as failure:
                _mark_unknown(failure)
                raise
            if found is not None:
                return found
        raise
