"""Shared plumbing of the two command lines: error handling and exit codes."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from firmware_bridge.errors import EdgesegError


def build_cli(prog: str, description: str, modules: list[str]) -> argparse.ArgumentParser:
    """A parser with ``--debug`` and one sub-command per module's ``register(subparsers)``.

    Args:
        prog: Program name.
        description: First line of the help.
        modules: Dotted names of the command modules, in help order.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
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
    try:
        return int(args.func(args) or 0)
    except (EdgesegError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
