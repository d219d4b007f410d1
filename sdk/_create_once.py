"""Create something remote at most once, whatever the network does: the one create-once mechanism.

A create that fails ambiguously (a dropped connection, a timeout, a 408 or 5xx: the server may have
acted before the failure) is never simply sent again. The created thing carries a key (an anytune
idempotency tag, label or client-chosen name), and before any further attempt :func:`create_once`
looks the key up:

* found: that is the result, no second create;
* surely absent (the lookup answered and found nothing): create again;
* unknown (the lookup itself failed): no create; the lookup's error ends the call, because a
  second create while the first one's fate is unknown is how duplicate jobs (and bills) happen.

Lookups are reads, so the adapter passes a ``lookup`` that retries under its read policy; the
attempts, sleeps and deadline of the create itself follow the same :class:`RetryPolicy` as reads.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from anytune._retry import RetryPolicy, retry_call

__all__ = ["create_once"]

T = TypeVar("T")

logger = logging.getLogger("anytune.create_once")


def create_once(
    create: Callable[[], T],
    lookup: Callable[[], T | None],
    *,
    is_ambiguous: Callable[[BaseException], bool],
    retry_on: Callable[[BaseException], bool],
    policy: RetryPolicy,
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    what: str = "create",
) -> T:
    """Run ``create`` until it succeeds, never twice for one key.

    Args:
        create: sends the create request once; returns what was created.
        lookup: finds what an earlier attempt created under the same key (None: surely absent);
            it raises when it cannot tell.
        is_ambiguous: whether a failed create may have happened anyway.
        retry_on: whether a failure (of the create or of the lookup) is worth another attempt;
            an ambiguous failure that is not worth one (a 409 conflict) is still looked up once.
        policy: attempts, back-off and deadline.
        retry_after: the server's wait hint carried by a failure.
        sleep, clock, rand: injectable for tests.
        what: for log lines.

    Returns:
        What ``create`` returned, or what ``lookup`` found.

    Raises:
        The last failure (untranslated; the adapter's boundary translates), or the lookup's.
    """
    unknown = False  # an earlier attempt may have created it
    lookup_failed = False  # the last attempt ended in the lookup, not the create

    def attempt() -> T:
        nonlocal unknown, lookup_failed
        lookup_failed = False
        if unknown:
            try:
                found = lookup()
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

    try:
        return retry_call(
            attempt,
            policy=policy,
            retry_on=retry_on,
            retry_after=retry_after,
            sleep=sleep,
            clock=clock,
            rand=rand,
            what=what,
        )
    except Exception:
        if unknown and not lookup_failed:
            # The last create may have gone through: look once more before reporting a failure.
            found = lookup()
            if found is not None:
                return found
        raise
