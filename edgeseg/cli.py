"""``edgeseg``: the workstation command line (train, adapt, evaluate, pretrain, export, demo, data check).

Each sub-command lives in its own module under ``edgeseg.commands`` and exposes
``register(subparsers)``; importing those modules must not import TensorFlow (they import it
inside the command function), so ``edgeseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from firmware_bridge.cliutil import build_cli, run_main

COMMAND_MODULES = [
    "edgeseg.commands.data",
    "edgeseg.commands.models",
    "edgeseg.commands.train",
    "edgeseg.commands.adapt",
    "edgeseg.commands.evaluate",
    "edgeseg.commands.pretrain",
    "edgeseg.commands.bench",
    "edgeseg.commands.qat",
    "edgeseg.commands.export",
    "edgeseg.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    return build_cli("edgeseg", __doc__.splitlines()[0], COMMAND_MODULES)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgeseg`` console script."""
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
