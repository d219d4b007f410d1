"""Third-party chatter kept away from the user, and still there for ``--debug``.

The SDKs and libraries anytune drives talk on their own: azure-ai-ml logs a warning for every
"experimental" class it uses internally, azure-identity logs each failed sign-in (which anytune
reports itself, once), transformers and bitsandbytes print deprecation notes into the local
worker's log. None of it is the user's to act on.

* :func:`demote_warnings` lowers matching records of one library's logger to DEBUG: a console at
  WARNING (Python's last-resort handler included) skips them, ``--debug`` still shows them. It is
  installed where anytune first uses that library, so it concerns anytune's calls, not a blanket
  filter set at import.
* :func:`silence_library_warnings` ignores deprecation and future warnings in a process anytune
  owns (the CLI, the local worker), unless the user asked for debug output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = [
    "DEBUG_ENV",
    "NOISE_CATEGORIES",
    "QUIET_LIBRARY_ENV",
    "debug_requested",
    "demote_warnings",
    "hub_progress_bars",
    "quiet_library_handlers",
    "quiet_worker",
    "silence_library_warnings",
]

#: Set (to anything but empty or "0") by ``anytune --debug``; processes anytune starts (the local
#: worker) inherit it and then keep the libraries' warnings in their log.
DEBUG_ENV = "ANYTUNE_DEBUG"

#: Variables the training libraries read when first imported: errors only, no advice, no banner.
QUIET_LIBRARY_ENV: dict[str, str] = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "BITSANDBYTES_NOWELCOME": "1",
}


class _Demote(logging.Filter):
    """Lowers a logger's WARNING/INFO records that match ``pattern`` (None: all) to DEBUG."""

    def __init__(self, pattern: re.Pattern[str] | None) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.DEBUG < record.levelno < logging.ERROR:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: leave the record as logging would
                return True
            if self.pattern is None or self.pattern.search(message):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def demote_warnings(logger_name: str, pattern: str | None = None) -> None:
    """Show the warnings of ``logger_name`` matching ``pattern`` (a regex; None: all) only at DEBUG.

    Idempotent. A logger filter sees the records logged on that logger itself, not its children:
    name the logger that emits them.
    """
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _Demote) for f in logger.filters):
        logger.addFilter(_Demote(re.compile(pattern, re.I) if pattern else None))


#: ``warnings`` categories that are a library's business with its own users, not ours.  anytune
#: raises none of them; one attributed to an anytune module (``stacklevel``) is still a library's
#: note about how it is called, for the developer who pins its version.
NOISE_CATEGORIES: tuple[type[Warning], ...] = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def silence_library_warnings() -> None:
    """Ignore deprecation and future warnings in this process (the CLI's or the local worker's).

    Call it inside ``warnings.catch_warnings()`` where the process may go on to do other things.
    """
    import warnings

    for category in NOISE_CATEGORIES:
        warnings.filterwarnings("ignore", category=category)


def debug_requested(env: Mapping[str, str]) -> bool:
    """Whether ``env`` asks for debug output (:data:`DEBUG_ENV` set and not "0")."""
    return env.get(DEBUG_ENV, "") not in ("", "0")


def quiet_worker(env: MutableMapping[str, str]) -> bool:
    """Make a worker process's log the job's, not its libraries': unless debug is requested,
    deprecation and future warnings are ignored and transformers, datasets and bitsandbytes are told
    (through the variables they read at import, :data:`QUIET_LIBRARY_ENV`) to report errors only.
    A variable the user set is kept. Call before importing them. Returns whether it quietened."""
    if debug_requested(env):
        return False
    silence_library_warnings()
    for name, value in QUIET_LIBRARY_ENV.items():
        env.setdefault(name, value)
    return True


class _DropUnlessDebug(logging.Filter):
    """A library handler's filter: drops records of ``names`` (logger prefixes) or matching
    ``pattern`` unless debug output is requested (:data:`DEBUG_ENV`)."""

    def __init__(self, names: tuple[str, ...], pattern: re.Pattern[str] | None) -> None:
        super().__init__()
        self.names = names
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL or debug_requested(os.environ):
            return True
        if self.names and record.name.startswith(self.names):
            return False
        try:
            return not (self.pattern is not None and self.pattern.search(record.getMessage()))
        except Exception:  # a bad format string: leave the record as logging would
            return True


def quiet_library_handlers(prefix: str, *, names: tuple[str, ...] = (), pattern: str | None = None) -> None:
    """Filter the handlers a library put on its own loggers (``prefix`` and below; azure-ai-ml
    prints to stderr through them, bypassing the application's logging): records of ``names`` or
    matching ``pattern`` are dropped unless debug output is requested. Idempotent."""
    compiled = re.compile(pattern, re.I) if pattern else None
    loggers = [logging.getLogger(prefix)] + [
        lg
        for name, lg in list(logging.Logger.manager.loggerDict.items())
        if name.startswith(prefix + ".") and isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            # Only the library's own console handlers (azure-ai-ml's are plain StreamHandlers): a
            # handler someone else attached there (a log file, pytest's capture) keeps every record.
            if type(handler) is not logging.StreamHandler:
                continue
            if not any(isinstance(f, _DropUnlessDebug) for f in handler.filters):
                handler.addFilter(_DropUnlessDebug(names, compiled))


def hub_progress_bars(tqdm_module: Any) -> contextlib.AbstractContextManager[Any]:
    """huggingface_hub's transfer bars (``huggingface_hub.utils``, passed in: no import here) for
    one block: kept on a terminal, where a bar for a large upload is the progress a user wants;
    off where stderr is a log, a pipe or a test's capture, where a bar is a stream of ``\\r``
    lines; on again with ``--debug``."""
    if sys.stderr.isatty() or debug_requested(os.environ):
        return contextlib.nullcontext()
    bars_off: contextlib.AbstractContextManager[Any] = tqdm_module.disable_progress_bars()
    return bars_off
