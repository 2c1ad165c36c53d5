"""Shared plumbing of the two command lines: error handling and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from firmware_bridge.errors import EdgesegError


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _number(kind, test, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
"""``type=`` for options that count something: 1, 2, ..."""
count = _number(int, lambda v: v >= 0, "an integer >= 0")
"""``type=`` for options where 0 means none."""
positive_float = _number(float, lambda v: v > 0 and v != float("inf"), "a positive number")
"""``type=`` for rates, sizes and time budgets."""
non_negative_float = _number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
"""``type=`` for tolerances and strengths where 0 means none."""
share = _number(float, lambda v: 0 <= v <= 1, "a share between 0 and 1")
"""``type=`` for fractions."""


def build_cli(prog: str, description: str, modules: list[str]) -> argparse.ArgumentParser:
    """A parser with ``--debug`` and one sub-command per module's ``register(subparsers)``.

    Args:
        prog: Program name.
        description: First line of the help.
        modules: Dotted names of the command modules, in help order.

    Returns:
        The parser.
    """
    parser = OneLineParser(prog=prog, description=description.replace("``", ""))
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def run_main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse arguments and run the chosen command's ``func(args) -> int``.

    User errors (:class:`EdgesegError`, missing files) print one line to stderr and return 2;
    a traceback is shown only with ``--debug``.

    Args:
        parser: Parser whose sub-commands set ``func`` via ``set_defaults``.
        argv: Arguments, ``None`` for ``sys.argv[1:]``.

    Returns:
        The process exit code.

    """
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for reports to record
    if getattr(args, "debug", False):
        os.environ["EDGESEG_DEBUG"] = "1"  # also shows TensorFlow's start-up messages
    previous = _terminate_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except (EdgesegError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _terminate_as_interrupt():
    """Make SIGTERM unwind like Ctrl-C: temporary files removed, children and servers stopped.

    A service manager or a flight computer stops a process with SIGTERM; without this, Python
    dies at once and leaves partial outputs. Returns the previous handler (``None`` outside
    the main thread, where signals cannot be handled).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs; act on one that came once it is done.

    A cleanup (removing a socket file, say) then runs whole even when a service manager
    signals twice, or signals just as the resource was created. Python runs signal handlers
    in the main thread only, so the handlers are swapped for a recorder there; elsewhere the
    block simply runs.

    Yields:
        Nothing; the block runs with the signals recorded instead of handled.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])
