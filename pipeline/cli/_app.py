"""The root Typer app and the error boundary every command runs inside."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from datasets.errors import ClearsightError

__all__ = ["app", "installed_version", "run", "state"]


class _State:
    debug: bool = False


state = _State()

app = typer.Typer(
    name="clearsight",
    help="Smart inspection for customs: score cargo images, decide release before inspection, audit it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def installed_version() -> str:
    """This build's version as installed (``pip install``), or words saying it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clearsight")
    except PackageNotFoundError:  # run from a source tree that pip never installed
        return "(version unknown: not installed; pip install -e . records it)"


def _print_version(asked: bool) -> None:
    if asked:
        print(f"clearsight {installed_version()}")  # noqa: T201
        raise typer.Exit()


class _ConsoleLog(logging.Handler):
    """The ``clearsight`` loggers' records as the CLI's own lines on stderr: ``Warning: message``, as
    the commands print theirs (``Info: message`` with ``--debug``). Without it a warning logged below
    the CLI (a 16-bit image read at an assumed depth, a picture with no perceptual hash) reached the
    terminal as a bare line through logging's last resort."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            label = "[yellow]Warning:[/yellow]" if record.levelno >= logging.WARNING else "[dim]Info:[/dim]"
            text = escape(record.getMessage())
            if record.exc_info and state.debug:
                text += "\n" + escape(logging.Formatter().formatException(record.exc_info))
            # stderr as it is now: a progress bar's, a test's capture
            Console(stderr=True).print(f"{label} {text}", highlight=False)
        except Exception:  # noqa: BLE001 -- logging's own policy: a record that cannot be shown is said
            self.handleError(record)


def _log_to_console(ctx: typer.Context, *, debug: bool) -> None:
    """Route the ``clearsight`` loggers to :class:`_ConsoleLog` while the command runs, and only
    there: not on to the root logger (a handler there, anyone's, would print each record twice),
    INFO only with ``--debug``. Put back as it was when the command ends, unless the command
    configured logging itself (``serve`` installs its JSON lines, which replace this handler)."""
    logger = logging.getLogger("clearsight")
    if any(isinstance(h, _ConsoleLog) for h in logger.handlers):
        return  # a run inside a run (the demo's steps): the outer one's handler prints
    before = (logger.level, logger.propagate)
    handler = _ConsoleLog(logging.INFO if debug else logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False
    if debug:
        logger.setLevel(logging.INFO)

    def put_back() -> None:
        if handler in logger.handlers:
            logger.removeHandler(handler)
            logger.setLevel(before[0])
            logger.propagate = before[1]

    ctx.call_on_close(put_back)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show full tracebacks on errors (or set CLEARSIGHT_DEBUG=1), and the notes logged at "
            "info level.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the installed version and exit."
        ),
    ] = False,
) -> None:
    state.debug = debug
    _log_to_console(ctx, debug=debug)


def validation_words(exc: ValidationError, options: frozenset[str] = frozenset()) -> str:
    """A pydantic error in words that name the variable to fix (and the option, where the CLI has
    one: ``options`` holds the commands' option names) and the value given."""
    parts = []
    for error in exc.errors()[:3]:
        loc = [str(p) for p in error.get("loc", ())]
        if len(loc) == 1:
            flag = "--" + loc[0].replace("_", "-")
            names = ([flag] if flag in options else []) + [f"CLEARSIGHT_{loc[0].upper()}"]
            where = f"{loc[0]} ({' or '.join(names)}): "
        else:  # a check of several settings together, or a nested one: its message says which
            where = f"{'.'.join(loc)}: " if loc else ""
        given = error.get("input")
        shown = "" if isinstance(given, dict) or given is None else f"; got {str(given)[:80]!r}"
        parts.append(f"{where}{error.get('msg')}{shown}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _commands(command: Any) -> Iterator[Any]:
    """``command`` and every command under it."""
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


def _flags_without_metavar(root: Any) -> None:
    """On/off flags take no value: help shows ``--overwrite``, not ``--overwrite <bool>``, which read
    as if it took one (``--overwrite true`` is refused)."""
    for command in _commands(root):
        for param in getattr(command, "params", []):
            if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
                param.metavar = ""
        command.get_help_option = _help_without_metavar(command.get_help_option)


def _help_without_metavar(make_help: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def help_option(ctx: Any) -> Any:  # --help is made when asked for, not kept in params
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    return help_option


def _option_names(root: Any, args: list[str]) -> frozenset[str]:
    """The options of the command ``args`` invoke and of the groups above it: a setting is named by
    its option only where the command run has one (``decide`` has no ``--runtime``)."""
    chain, command = [root], root
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is not None:
            chain.append(sub)
            command = sub
        elif not getattr(command, "commands", None):
            break  # a command's own arguments from here on, not subcommands
    return frozenset(name for c in chain for p in getattr(c, "params", []) for name in p.opts)


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While a command runs, SIGTERM (``timeout``, ``systemctl stop``, ``docker stop``) exits as
    Ctrl-C does, through the commands' clean-up: killed outright, an export left its hidden
    temporary file of partial decisions behind. Only where nothing else handles it (uvicorn sets
    its own while it serves); the handler before is put back after."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that the command's clean-up runs (exit 143)."""


def _exit_on_term(signum: int, frame: object) -> None:
    raise _Terminated(128 + signum)


def _debug_setting(*, said: bool = False) -> bool:
    """``Settings.debug`` as pydantic-settings reads it (``CLEARSIGHT_DEBUG``, or ``.env``), alone: a
    bad value of another setting, the error being reported maybe, must not hide it. A value that is
    no yes or no counts as no, the error path must not fail on it, and is said (unless ``said``: the
    error reported is that value's). So does a setting that cannot be read at all: a ``.env`` saved as
    UTF-16 (PowerShell 5's ``echo X=1 > .env``) turned every error into two tracebacks and exit 1."""
    from pydantic_settings import BaseSettings

    from pipeline.settings import Settings

    class _Debug(BaseSettings):
        model_config = Settings.model_config
        debug: bool = False

    try:
        return _Debug().debug
    except ValidationError as exc:
        if said:
            return False
        given = next((e.get("input") for e in exc.errors()), None)
        print(  # noqa: T201
            f"Warning: CLEARSIGHT_DEBUG {str(given)[:40]!r} is neither yes nor no (accepted: 1, true, yes, "
            "on; 0, false, no, off); no traceback shown",
            file=sys.stderr,
        )
        return False
    except Exception as exc:  # noqa: BLE001 -- whatever the reading fails on, the error being reported comes first
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(  # noqa: T201
            f"Warning: the debug setting (CLEARSIGHT_DEBUG, or .env) could not be read ({why[:120]}); "
            "no traceback shown",
            file=sys.stderr,
        )
        return False


_NOT_A = {"int_parsing": "a whole number", "float_parsing": "a number", "bool_parsing": "true or false"}
"""What a value pydantic could not parse as an option's type is not, by its error type."""
_RANGES = {
    "greater_than_equal": ("ge", "{} or more"),
    "greater_than": ("gt", "more than {}"),
    "less_than_equal": ("le", "{} or less"),
    "less_than": ("lt", "less than {}"),
}
"""What an option's range accepts, by pydantic's error type and the bound in its context."""


def _name_the_value(exc: Exception) -> None:
    """An option's value typer could not parse as its type named the option, not the value:
    ``--seed abc`` read "Input should be a valid integer, unable to parse string as an integer" (the
    words of the pydantic error typer raises from). Now ``'abc' is not a whole number``."""
    cause = exc.__cause__
    if not isinstance(cause, ValidationError) or not isinstance(getattr(exc, "message", None), str):
        return
    errors = cause.errors()
    if not errors or "input" not in errors[0]:
        return
    value, kind, bound = errors[0]["input"], str(errors[0].get("type")), errors[0].get("ctx", {})
    if kind in _NOT_A:
        said = f"{value!r} is not {_NOT_A[kind]}"
    elif kind in _RANGES and _RANGES[kind][0] in bound:
        key, words = _RANGES[kind]
        said = f"{value!r} is out of range; accepted: {words.format(bound[key])}"
    else:
        said = f"{value!r}: {exc.message}"  # type: ignore[attr-defined]
    exc.message = said  # type: ignore[attr-defined]


_depth = 0
"""How many :func:`run` calls are in progress: the demo runs its steps through :func:`run` too,
and an inner one must hand Ctrl-C and SIGTERM on to the outer one (read as a failed step, they
gave "Error: step 1 failed with exit code 143" and exit 2)."""


def run(typer_app: typer.Typer = app, argv: list[str] | None = None) -> int:
    """Run the CLI; a ``ClearsightError`` becomes ``Error: message`` on stderr and exit code 2.

    Tracebacks are printed only with ``--debug`` or the ``debug`` setting (``CLEARSIGHT_DEBUG=1``).
    Returns the process exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)

    def debug(said: bool = False) -> bool:  # read only on an error: a run that succeeds reads none here
        return "--debug" in args or _debug_setting(said=said)

    command = typer.main.get_command(typer_app)
    _flags_without_metavar(command)
    global _depth
    _depth += 1
    try:
        # Outside standalone mode click turns Ctrl-C into an exit code of 130 that it *returns*
        # (it does not raise): a script's `clearsight score && clearsight decide` must see it.
        with _terminate_as_exit():
            result = command(args=args, prog_name="clearsight", standalone_mode=False)
        if result == 130 and _depth > 1:
            raise KeyboardInterrupt
    except _Terminated as exc:
        if _depth > 1:
            raise
        return int(exc.code or 0)
    except KeyboardInterrupt:
        if _depth > 1:
            raise
        print("Interrupted.", file=sys.stderr)  # noqa: T201
        return 130
    except ClearsightError as exc:
        if debug():
            traceback.print_exc()
        print(f"Error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except ValidationError as exc:  # settings from options and CLEARSIGHT_* variables
        if debug(said=any(tuple(e.get("loc", ())) == ("debug",) for e in exc.errors())):
            traceback.print_exc()
        print(f"Error: {validation_words(exc, _option_names(command, args))}", file=sys.stderr)  # noqa: T201
        return 2
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:
        # Typer vendors its own click: recognise its usage errors and exits by shape, not by class.
        exit_code = getattr(exc, "exit_code", None)
        if isinstance(exit_code, int):
            _name_the_value(exc)
            show = getattr(exc, "show", None)
            if callable(show):
                show()
            return exit_code
        if type(exc).__name__ == "Abort":
            print("Aborted.", file=sys.stderr)  # noqa: T201
            return 1
        if debug():
            raise
        hint = "rerun with --debug for a traceback"
        print(f"Error: unexpected {type(exc).__name__}: {exc} ({hint})", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        _depth -= 1
    if result == 130:
        print("Interrupted.", file=sys.stderr)  # noqa: T201
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
