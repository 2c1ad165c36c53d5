"""``edgeseg-run``: the device command line (predict, validate, bench, serve).

Never imports TensorFlow. Each sub-command lives in ``firmware_bridge.commands.<name>`` and
exposes ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import sys

from firmware_bridge.cliutil import build_cli, run_main
from firmware_bridge.heap import fix_mmap_threshold

COMMAND_MODULES: list[str] = [
    "firmware_bridge.commands.predict",
    "firmware_bridge.commands.validate",
    "firmware_bridge.commands.bench",
    "firmware_bridge.commands.serve",
]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    return build_cli("edgeseg-run", __doc__.splitlines()[0], COMMAND_MODULES)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgeseg-run`` console script."""
    fix_mmap_threshold()  # peak memory must not creep up over a long scene (firmware_bridge.heap)
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
