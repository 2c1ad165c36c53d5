"""``edgeseg models``: list every architecture x backbone with its parameters and MACs."""

from __future__ import annotations

import argparse
import json

from edgeseg.models import ARCHITECTURES, BACKBONES, build_model, list_models, model_summary
from edgeseg.tf_env import tf_keras
from firmware_bridge.cliutil import positive_int
from firmware_bridge.errors import EdgesegError
from firmware_bridge.fsutil import atomic_write_bytes, check_output_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command."""
    p = sub.add_parser(
        "models", help="list architectures x backbones with parameters and MACs"
    )
    p.add_argument("--size", type=positive_int, default=256, help="square input side (default 256)")
    p.add_argument("--classes", type=positive_int, default=5, help="number of classes (default 5)")
    p.add_argument("--arch", action="append", help="only this architecture (repeatable)")
    p.add_argument("--backbone", action="append", help="only this backbone (repeatable)")
    p.add_argument("--upsampling", default="bilinear",
                   help="bilinear, nearest or transpose (default bilinear)")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT")
    p.set_defaults(func=run_models)


def model_rows(size: int, classes: int, archs=None, backbones=None,
               upsampling: str = "bilinear") -> list[dict]:
    """Build each selected model once and count its parameters and MACs.

    Args:
        size: Square input side.
        classes: Number of classes of the head.
        archs: Architectures to include (default all).
        backbones: Backbones to include (default all).
        upsampling: Upsampling mode of every model.

    Returns:
        One dict per model: arch, backbone, input, params, trainable_params, macs.

    Raises:
        EdgesegError: Unknown names or an invalid size (from :func:`build_model`).
    """
    _, keras = tf_keras()
    rows = []
    for arch, backbone in list_models():
        if (archs and arch not in archs) or (backbones and backbone not in backbones):
            continue
        model = build_model(arch, backbone, classes, input_size=(size, size),
                            upsampling=upsampling)
        rows.append({"arch": arch, "backbone": backbone, "input": f"{size}x{size}",
                     **model_summary(model)})
        keras.backend.clear_session()
    return rows


def render(rows: list[dict]) -> str:
    """Format rows from :func:`model_rows` as a text table (params in M, MACs in G)."""
    lines = [f"{'architecture':<15}{'backbone':<20}{'input':>9}{'params (M)':>12}{'MACs (G)':>10}"]
    for r in rows:
        lines.append(f"{r['arch']:<15}{r['backbone']:<20}{r['input']:>9}"
                     f"{r['params'] / 1e6:>12.3f}{r['macs'] / 1e9:>10.3f}")
    return "\n".join(lines)


def run_models(args: argparse.Namespace) -> int:
    """Print the table (and write JSON when asked)."""
    if args.json:
        check_output_file(args.json, "--json")  # before the models are built, not after
    for name, valid in ((args.arch, ARCHITECTURES), (args.backbone, BACKBONES)):
        unknown = sorted(set(name or ()) - set(valid))
        if unknown:
            raise EdgesegError(f"unknown {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    rows = model_rows(args.size, args.classes, args.arch, args.backbone, args.upsampling)
    print(render(rows))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(rows, indent=2).encode())
    return 0
