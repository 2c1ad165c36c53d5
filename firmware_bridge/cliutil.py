"""Shared plumbing of the two command lines: error handling and exit codes."""

from __future__ import annotations

import argparse
import sys

from firmware_bridge.errors import EdgesegError


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
