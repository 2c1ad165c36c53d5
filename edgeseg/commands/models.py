"""``edgeseg models``: list every architecture x backbone x upsampling with parameters and MACs."""

from __future__ import annotations

import argparse
import json

from edgeseg.models import (
    ARCHITECTURES,
    BACKBONES,
    UPSAMPLING_MODES,
    build_model,
    list_models,
    model_summary,
)
from edgeseg.tf_env import tf_keras
from firmware_bridge.cliutil import positive_int
from firmware_bridge.errors import EdgesegError
from firmware_bridge.fsutil import atomic_write_bytes, check_output_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command."""
    p = sub.add_parser(
        "models", help="list architectures x backbones (x upsampling modes) with parameters and MACs"
    )
    p.add_argument("--size", type=positive_int, default=256, help="square input side (default 256)")
    p.add_argument("--classes", type=positive_int, default=5, help="number of classes (default 5)")
    p.add_argument("--arch", action="append", help="only this architecture (repeatable)")
    p.add_argument("--backbone", action="append", help="only this backbone (repeatable)")
    p.add_argument("--upsampling", action="append",
                   help=f"upsampling mode, repeatable for one row per mode ({', '.join(UPSAMPLING_MODES)}"
                        " or all; default bilinear)")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON to OUT")
    p.set_defaults(func=run_models)


def model_rows(size: int, classes: int, archs=None, backbones=None,
               upsampling: str | list[str] = "bilinear") -> list[dict]:
    """Build each selected model once and count its parameters and MACs.

    Args:
        size: Square input side.
        classes: Number of classes of the head.
        archs: Architectures to include (default all).
        backbones: Backbones to include (default all).
        upsampling: Upsampling mode, or several (one row per model and mode).

    Returns:
        One dict per model: arch, backbone, upsampling, input, params, trainable_params, macs.

    Raises:
        EdgesegError: Unknown names or an invalid size (from :func:`build_model`).
    """
    _, keras = tf_keras()
    modes = [upsampling] if isinstance(upsampling, str) else list(upsampling)
    rows = []
    for arch, backbone in list_models():
        if (archs and arch not in archs) or (backbones and backbone not in backbones):
            continue
        for mode in modes:
            model = build_model(arch, backbone, classes, input_size=(size, size), upsampling=mode)
            rows.append({"arch": arch, "backbone": backbone, "upsampling": mode,
                         "input": f"{size}x{size}", **model_summary(model)})
            keras.backend.clear_session()
    return rows


def render(rows: list[dict]) -> str:
    """Format rows from :func:`model_rows` as a text table (params in M, MACs in G)."""
    lines = [f"{'architecture':<15}{'backbone':<20}{'upsampling':<12}{'input':>9}{'params (M)':>12}"
             f"{'MACs (G)':>10}"]
    for r in rows:
        lines.append(f"{r['arch']:<15}{r['backbone']:<20}{r['upsampling']:<12}{r['input']:>9}"
                     f"{r['params'] / 1e6:>12.3f}{r['macs'] / 1e9:>10.3f}")
    return "\n".join(lines)


def run_models(args: argparse.Namespace) -> int:
    """Print the table (and write JSON when asked)."""
    if args.json:
        check_output_file(args.json, "--json")  # before the models are built, not after
    modes = args.upsampling or ["bilinear"]
    modes = list(UPSAMPLING_MODES) if "all" in modes else list(dict.fromkeys(modes))
    for name, valid in ((args.arch, ARCHITECTURES), (args.backbone, BACKBONES),
                        (modes, UPSAMPLING_MODES)):
        unknown = sorted(set(name or ()) - set(valid))
        if unknown:
            raise EdgesegError(f"unknown {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    rows = model_rows(args.size, args.classes, args.arch, args.backbone, modes)
    print(render(rows))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(rows, indent=2).encode())
    return 0
