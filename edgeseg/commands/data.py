"""``edgeseg data check DIR --classes FILE``."""

from __future__ import annotations

import argparse
import sys

from edgeseg.data.check import check_dataset
from firmware_bridge.io.classes import ClassTable


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    data = sub.add_parser("data", help="inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "check", help="pair images and masks, report sizes, class shares, weights and problems"
    )
    p.add_argument("dir", help="dataset folder holding images/ and masks/")
    p.add_argument("--classes", required=True, help="class table CSV (name,colour,ignore)")
    p.add_argument("--unknown-to-ignore", action="store_true",
                   help="count colours missing from the table as ignore instead of errors")
    p.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Run the data check; exit 0 when clean, 1 when problems were found."""
    table = ClassTable.load(args.classes)
    report = check_dataset(args.dir, table, args.unknown_to_ignore, progress=sys.stderr.isatty())
    print(report.render())
    return 0 if report.ok else 1
