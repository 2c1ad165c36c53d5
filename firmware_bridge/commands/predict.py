"""``edgeseg-run predict MODEL INPUT... --out DIR``: masks for images and GeoTIFFs."""

from __future__ import annotations

import argparse

from firmware_bridge.cliutil import positive_int
from firmware_bridge.commands.modelargs import add_bands_arg, add_model_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    p = sub.add_parser(
        "predict", help="predict masks: GeoTIFF -> streamed GeoTIFF, other images -> PNG"
    )
    p.add_argument("model", help=".tflite, .xml (OpenVINO IR) or .onnx model")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images or (Geo)TIFF rasters")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--overlay", action="store_true",
                   help="also write <stem>_overlay.png (ordinary images)")
    p.add_argument("--block", type=positive_int, default=1024,
                   help="GeoTIFF streaming block edge in pixels (memory per block)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_bands_arg(p)
    add_model_args(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Predict every input; returns 0 when all succeeded, 1 when some failed."""
    import sys
    from pathlib import Path

    from firmware_bridge.commands.modelargs import load_segmenter
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.io.raster import output_stems, predict_file
    from firmware_bridge.progress import progress

    if args.block < 1:
        raise EdgesegError(f"--block must be a positive number of pixels, got {args.block}")
    stems = output_stems(args.inputs)  # two inputs never write the same file
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EdgesegError(f"{out}: exists and is not a folder: pass a folder to --out")
    seg = load_segmenter(args)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesegError(f"{out}: cannot create the output folder ({exc})") from exc
    if args.overlay and any(Path(s).suffix.lower() in (".tif", ".tiff") for s in args.inputs):
        print("note: --overlay applies to ordinary images; GeoTIFFs get a colour-mapped mask",
              file=sys.stderr)
    show = not args.quiet and sys.stderr.isatty()
    failed = 0
    jobs = list(zip(args.inputs, stems, strict=True))
    for src, stem in progress(jobs, len(jobs), "predict", show and len(jobs) > 1):
        try:
            done = predict_file(seg, src, out, args.bands, args.overlay, args.block, show, stem)
        except EdgesegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if done.nodata:
            print(f"note: {src}: {done.nodata} of {done.pixels} pixels "
                  f"({100 * done.nodata / done.pixels:.1f} %) have no data (NaN or the nodata "
                  "value): 255 in the mask, in no class", file=sys.stderr)
        for path in done.files:
            print(path)
    return 1 if failed else 0
