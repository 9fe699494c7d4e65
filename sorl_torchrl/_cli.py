"""How every console command ends: an exit status that means what it says, and a message.

Exit statuses of ``sorl-train``, ``sorl-evaluate``, ``sorl-results``, ``sorl-data`` and
``sorl-smoke``:

====  ======================================================================================
0     success
1     the command ran and its check failed (``sorl-data verify`` of a damaged file,
      ``sorl-results --strict`` with runs missing), or an unexpected error (a bug)
2     a user error: bad arguments or settings, a missing or unreadable file, a full disk,
      a checkpoint of another run (the message says what was wrong and what to do)
130   interrupted (Ctrl-C)
====  ======================================================================================

A user error prints one message, ``<command>: error: <what was wrong>``, and no traceback;
an unexpected error prints ``<command>: unexpected error (<type>): ...`` with a hint to
rerun with ``--debug``. ``--debug`` (or ``HYDRA_FULL_ERROR=1`` in the environment) prints the
traceback as well. :func:`console_command` wraps an ``argparse`` command's ``main`` and
:func:`hydra_command` a Hydra one.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STATUS_HELP",
    "EXIT_USER_ERROR",
    "UserError",
    "add_debug_option",
    "console_command",
    "error_report",
    "hydra_command",
    "user_error_types",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

#: The exit statuses, for a parser's ``epilog``.
EXIT_STATUS_HELP = (
    "exit status: 0 success; 1 a failed check or an unexpected error; 2 a user error "
    "(bad arguments or settings, a missing or unreadable file); 130 interrupted. Errors "
    "print one message; --debug adds the traceback."
)

_DEBUG_FLAG = "--debug"

MainFunction = Callable[[Sequence[str] | None], int | None]


class UserError(Exception):
    """An error whose message is the whole story: printed without a traceback.

    Raise it (or subclass it) for outcomes that are not bugs and that no built-in type
    describes. ``exit_code`` is the status the console commands exit with.

    Examples:
        >>> error_report(UserError("the run diverged at update 300"), "sorl-train")
        (2, 'sorl-train: error: the run diverged at update 300')
    """

    exit_code: int = EXIT_USER_ERROR


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as user errors (exit status 2, no traceback).

    Bad values (``ValueError``, settings included), missing keys (``KeyError``), I/O
    (``OSError``: missing files, permissions, a full disk), unusable checkpoints
    (:class:`~sorl_torchrl.checkpoint.CheckpointError`), :class:`UserError`, and Hydra's
    and OmegaConf's config errors (unknown groups, bad overrides, missing keys).
    """
    from sorl_torchrl.checkpoint import CheckpointError

    types: list[type[BaseException]] = [UserError, ValueError, KeyError, OSError, CheckpointError]
    try:
        from omegaconf.errors import OmegaConfBaseException

        types.append(OmegaConfBaseException)
        from hydra.errors import HydraException

        types.append(HydraException)
    except ImportError:  # pragma: no cover - both are dependencies
        pass
    return tuple(types)


def _text(error: BaseException) -> str:
    """The message of ``error`` (a ``KeyError``'s without its quotes), with its cause."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error)
    text = re.sub(r"\n\s*\n", "\n", text).strip() or type(error).__name__  # one paragraph
    cause = error.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text


def _os_hint(error: OSError) -> str:
    """What to do about an I/O error the system reported in its own words."""
    if error.errno == errno.ENOSPC:
        return "The disk is full: free some space or choose a dir on another disk."
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return "The path cannot be written or read: check its permissions, or choose another."
    return "Check the path: every part of it must be a dir, the last one a file where one is read."


def error_report(error: BaseException, prog: str) -> tuple[int, str]:
    """The exit status and the message a command prints for ``error``.

    Examples:
        >>> error_report(FileNotFoundError("No checkpoint at x.pt."), "sorl-evaluate")
        (2, 'sorl-evaluate: error: No checkpoint at x.pt.')
        >>> error_report(OSError(28, "No space left on device"), "sorl-data")[1]
        'sorl-data: error: [Errno 28] No space left on device. The disk is full: free some ...'
        >>> code, text = error_report(ZeroDivisionError("division by zero"), "sorl-smoke")
        >>> code, text.splitlines()[0]
        (1, 'sorl-smoke: unexpected error (ZeroDivisionError): division by zero')
    """
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, f"{prog}: interrupted."
    if isinstance(error, user_error_types()):
        text = _text(error)
        if isinstance(error, OSError) and text.startswith("[Errno"):  # the system's own words
            text += f". {_os_hint(error)}"
        return getattr(error, "exit_code", EXIT_USER_ERROR), f"{prog}: error: {text}"
    return EXIT_FAILURE, (
        f"{prog}: unexpected error ({type(error).__name__}): {_text(error)}\n"
        f"This is not a known input error and may be a bug: rerun with {_DEBUG_FLAG} (or "
        "HYDRA_FULL_ERROR=1) to see the traceback, and report it with the command you ran."
    )


def _debug(argv: Sequence[str]) -> bool:
    return _DEBUG_FLAG in argv or os.environ.get("HYDRA_FULL_ERROR") == "1"


def _report(error: BaseException, prog: str, debug: bool) -> int:
    code, text = error_report(error, prog)
    if debug:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(text, file=sys.stderr)
    return code


def add_debug_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (print the traceback of an error) to ``parser``; returns it.

    Examples:
        >>> add_debug_option(argparse.ArgumentParser()).parse_args(["--debug"]).debug
        True
    """
    parser.add_argument(
        _DEBUG_FLAG,
        action="store_true",
        help="on an error, also print the full traceback (as HYDRA_FULL_ERROR=1 does)",
    )
    return parser


def console_command(prog: str) -> Callable[[MainFunction], Callable[..., int]]:
    r"""Decorate an ``argparse`` command's ``main(argv) -> int | None`` with the exit rules.

    The decorated ``main(argv=None)`` returns the exit status: ``main``'s own (``None`` is
    0), or that of :func:`error_report` after printing the message (and, with ``--debug``
    in ``argv`` or ``HYDRA_FULL_ERROR=1``, the traceback). ``SystemExit`` (argparse's
    usage errors, ``--help``) passes through. The undecorated function is ``__wrapped__``,
    the command's name ``command_name``.

    Examples:
        >>> @console_command("demo")
        ... def main(argv=None):
        ...     raise FileNotFoundError("no file data.npz")
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     code = main([])
        >>> code, err.getvalue()
        (2, 'demo: error: no file data.npz\n')
    """

    def decorate(main: MainFunction) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            args = sys.argv[1:] if argv is None else list(argv)
            try:
                code = main(argv)
            except (Exception, KeyboardInterrupt) as error:
                return _report(error, prog, _debug(args))
            return EXIT_OK if code is None else int(code)

        run.command_name = prog  # type: ignore[attr-defined]
        return run

    return decorate


def hydra_command(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    r"""Decorate a ``@hydra.main`` entry point with the exit rules (put it above ``@hydra.main``).

    Called without arguments (the console script), the entry point drops ``--debug`` from
    ``sys.argv`` (Hydra does not know it), lets Hydra raise instead of printing its own
    trace, and ends in ``SystemExit`` with :func:`error_report`'s status after printing the
    message (and the traceback with ``--debug`` or ``HYDRA_FULL_ERROR=1``); it returns
    normally on success. Called with a config (``main(cfg)``, Hydra's pass-through) it is
    the plain function, errors included. The command's name is its ``command_name``.

    Examples:
        >>> @hydra_command("demo")
        ... def main(cfg=None):
        ...     raise ValueError("num_updates: got -5, allowed an integer >= 0")
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     try:
        ...         main()
        ...     except SystemExit as done:
        ...         code = done.code
        >>> code, err.getvalue()
        (2, 'demo: error: num_updates: got -5, allowed an integer >= 0\n')
    """

    def decorate(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(hydra_main)
        def run(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs:
                return hydra_main(*args, **kwargs)
            argv, full_error = list(sys.argv), os.environ.get("HYDRA_FULL_ERROR")
            debug = _debug(argv[1:])
            sys.argv = [arg for arg in argv if arg != _DEBUG_FLAG]
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; the message is ours
            try:
                return hydra_main()
            except (Exception, KeyboardInterrupt) as error:
                raise SystemExit(_report(error, prog, debug)) from None
            finally:
                sys.argv = argv
                if full_error is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = full_error

        run.command_name = prog  # type: ignore[attr-defined]
        return run

    return decorate
