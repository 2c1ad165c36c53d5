"""``edgeseg-run``: the device command line (predict, validate, bench, serve).

Never imports TensorFlow. Each sub-command lives in ``firmware_bridge.commands.<name>`` and
exposes ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from firmware_bridge.cliutil import run_main
from firmware_bridge.heap import fix_mmap_threshold

COMMAND_MODULES: list[str] = [
    "firmware_bridge.commands.predict",
    "firmware_bridge.commands.validate",
    "firmware_bridge.commands.bench",
    "firmware_bridge.commands.serve",
]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="edgeseg-run", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgeseg-run`` console script."""
    fix_mmap_threshold()  # peak memory must not creep up over a long scene (firmware_bridge.heap)
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
