"""``anytune``: the application, its error table and the entry point."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from typing import Annotated, Any, NoReturn

import typer

from anytune import errors
from anytune._cli import (
    config_cmd,
    data_cmd,
    demo_cmd,
    deploy_cmd,
    eval_cmd,
    export_cmd,
    jobs_cmd,
    providers_cmd,
    push_cmd,
    reconcile_cmd,
    serve_cmd,
)
from anytune._cli._common import err, lit, safe
from anytune._quiet import DEBUG_ENV, silence_library_warnings
from anytune._secrets import install_log_filter, redacting_handler

app = typer.Typer(
    name="anytune",
    help="Fine-tune language models anywhere: one CLI for OpenAI, Azure, Hugging Face and your own GPU/CPU.",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
reconcile_cmd.register(jobs_cmd.app)
app.add_typer(jobs_cmd.app, name="jobs")
app.add_typer(data_cmd.app, name="data")
app.add_typer(config_cmd.app, name="config")
app.command("providers")(providers_cmd.providers)
app.command("demo")(demo_cmd.demo)
app.command("push")(push_cmd.push)
app.command("export")(export_cmd.export)
app.command("eval")(eval_cmd.eval_)
app.command("serve")(serve_cmd.serve)
app.command("deploy")(deploy_cmd.deploy)
app.command("undeploy")(deploy_cmd.undeploy)
app.command("chat")(deploy_cmd.chat)

_state = {"debug": False}


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from anytune import __version__

        typer.echo(f"anytune {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()
    _state["debug"] = debug
    if debug:
        _debug_logging()


class _DebugHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The ``--debug`` console handler: every library's records, redacted before they are formatted."""


def _debug_logging() -> None:
    """Show every logger's debug records on stderr, secrets masked (httpx, azure, urllib3 included).

    The redacting filter sits on the handler itself, so a record from any logger is clean before
    this (or any other) handler formats it; ``install_log_filter`` covers handlers added later.
    """
    root = logging.getLogger()
    _stop_debug_logging()
    _level["root"] = root.level
    handler = _DebugHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(redacting_handler(handler))
    root.setLevel(logging.DEBUG)
    install_log_filter(root)


def _stop_debug_logging() -> None:
    """Undo :func:`_debug_logging` (the CLI can run more than once in one process)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _DebugHandler)]:
        root.removeHandler(handler)
    if "root" in _level:
        root.setLevel(_level.pop("root"))


_level: dict[str, int] = {}


class _QuietHandler(logging.Handler):
    """The console without ``--debug``: anytune's own warnings, as Python's last-resort handler
    would print them; every other library's records dropped (the SDKs' notes and their retries and
    failures, which anytune reports itself, once). ``--debug`` shows them all."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "anytune" and not record.name.startswith("anytune."):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")  # the stream of the moment (tests swap it)
        except Exception:
            self.handleError(record)


def _quiet_logging() -> None:
    _stop_quiet_logging()
    logging.getLogger().addHandler(redacting_handler(_QuietHandler()))


def _stop_quiet_logging() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _QuietHandler)]:
        root.removeHandler(handler)


INTERNAL_ERROR = "internal error (run with --debug for the traceback)"

# One table from exception to (label, exit status); the first matching class wins.
EXIT_CODES: tuple[tuple[type[BaseException], str, int], ...] = (
    (errors.DataValidationError, "invalid data", 3),
    (errors.MissingDependencyError, "missing dependency", 2),
    (errors.NotSupportedError, "not supported", 2),
    (errors.ConfigError, "configuration error", 2),
    (errors.UsageError, "usage error", 2),
    (errors.JobNotFoundError, "not found", 4),
    (errors.WaitTimeoutError, "timed out", 5),
    (errors.JobFailedError, "job failed", 6),
    (errors.AuthenticationError, "authentication failed", 7),
    (errors.SubmitOutcomeUnknownError, "outcome unknown", 8),
    (errors.StoreError, "job store error", 9),
    (errors.ProviderError, "provider error", 1),
    (errors.AnytuneError, "error", 1),
    # Any other OS failure (a file that cannot be read or written): one line naming the path and
    # the cause, like sysexits' EX_IOERR. (WaitTimeoutError, a TimeoutError, matched above.)
    (OSError, "I/O error", 74),
    (KeyboardInterrupt, "interrupted", 130),
    # Anything else is a bug of ours (EX_SOFTWARE); README's exit-status table lists every code here.
    (BaseException, INTERNAL_ERROR, 70),
)


def _fail(exc: BaseException) -> NoReturn:
    label, code = next(
        ((label, code) for cls, label, code in EXIT_CODES if isinstance(exc, cls)),
        (INTERNAL_ERROR, 70),
    )
    message = str(exc) or type(exc).__name__
    if isinstance(exc, errors.DataValidationError) and exc.issues:
        message = exc.headline  # the issues are listed below, once: not the message's copy of the first ones
    err.print(f"[bold red]{label}:[/] {lit(message)}", markup=True, highlight=False)
    if isinstance(exc, errors.DataValidationError) and exc.issues:
        for issue in exc.issues[:20]:
            err.print(f"  {safe(issue)}", markup=False)
        if len(exc.issues) > 20:
            err.print(f"  ... and {len(exc.issues) - 20} more", markup=False)
    sys.exit(code)


def _print_traceback(exc: BaseException) -> None:
    """The ``--debug`` traceback, chained exceptions included, with secrets masked."""
    import traceback

    sys.stderr.write(safe("".join(traceback.format_exception(exc))))
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors print one line (no traceback unless ``--debug``) and exit non-zero.

    Typer/click handle usage errors themselves (exit 2 with the usage line); anything anytune
    raises comes out here and goes through :data:`EXIT_CODES`.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    set_debug_env = debug and DEBUG_ENV not in os.environ
    if set_debug_env:
        os.environ[DEBUG_ENV] = "1"  # the local worker this run may start keeps its libraries' warnings
    previous = _interrupt_on_sigterm()
    try:
        with warnings.catch_warnings():
            if not debug:
                _quiet_logging()
                silence_library_warnings()
            app(args=args, prog_name="anytune")
    except SystemExit:
        raise
    except BaseException as exc:
        if _state["debug"] or debug:
            _print_traceback(exc)
        _fail(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _stop_debug_logging()
        _stop_quiet_logging()
        if set_debug_env:
            os.environ.pop(DEBUG_ENV, None)


def _interrupt_on_sigterm() -> Any:
    """SIGTERM (``kill``, a scheduler's stop) ends a command like Ctrl-C: clean-up runs (an export's
    scratch folder, a store transaction) and it exits 130, instead of dying mid-write. Only from the
    main thread, and only where nothing else handles SIGTERM; returns the handler to put back."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)
