"""``edgeseg-run predict MODEL INPUT... --out DIR``: masks for images and GeoTIFFs."""

from __future__ import annotations

import argparse

from firmware_bridge.cliutil import count, positive_float, positive_int
from firmware_bridge.commands.modelargs import add_model_args
from firmware_bridge.runtime.variants import PREFER


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    p = sub.add_parser(
        "predict", help="predict masks: GeoTIFF -> streamed GeoTIFF, other images -> PNG, "
                        "video -> per-frame CSV (and mask / overlay videos)"
    )
    p.add_argument("model", metavar="MODEL",
                   help=".tflite, .xml (OpenVINO IR) or .onnx model; several artifacts of one "
                        "model may follow it (e.g. model_int8.tflite model_fp32.tflite): each is "
                        "timed on a few tiles at start, the times go to stderr, and the faster "
                        "is used (an int8 one only when it is at least 1.05x as fast: on x86 "
                        "CPUs without VNNI int8 is not faster than fp32); they must have the "
                        "same classes, bands, tile and normalisation")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="images or (Geo)TIFF rasters (files, folders or globs: 'scenes/*.tif'), "
                        "or videos, a camera or a stream URL")
    p.add_argument("--prefer", choices=PREFER,
                   help="which artifact to use: 'fast' times every artifact given, and with "
                        "one MODEL the other artifacts of its export beside it "
                        "(model_fp32/_fp16/_int8/_qat_int8 of the same suffix, model.onnx), and "
                        "takes the faster; 'int8' or 'fp32' takes that precision (default with "
                        "several models: fast; with one: that model, untimed)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--overlay", action="store_true",
                   help="also write <stem>_overlay.png (ordinary images)")
    p.add_argument("--block", type=positive_int, default=1024,
                   help="GeoTIFF streaming block edge in pixels (memory per block)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    c = p.add_argument_group("past one machine (pip install 'edgeseg[cluster]'; (Geo)TIFF scenes)")
    c.add_argument("--workers", type=positive_int,
                   help="run on a local Dask cluster of this many worker processes (more than the "
                        "cores warns; more than 4 per core is refused). A task is a strip of "
                        "whole rows of --block blocks; each tile is predicted once, the bands "
                        "between strips are finished by this process, and the masks equal "
                        "those of one process")
    c.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (every worker "
                        "must read the model and the scenes at the paths given)")
    c.add_argument("--connect-timeout", type=positive_float, metavar="SECONDS",
                   help="give up when the --scheduler does not accept the connection and answer "
                        "as a Dask scheduler within this many seconds; also bounds every later "
                        "connection to it (default 30)")
    c.add_argument("--worker-timeout", type=positive_float, metavar="SECONDS",
                   help="give up when no worker has joined the --scheduler, or the local "
                        "--workers have not all started, within this many seconds (default 60)")
    c.add_argument("--overwrite", action="store_true",
                   help="predict scenes whose mask exists (default: skip them)")
    c.add_argument("--dashboard", action="store_true", help="print the Dask dashboard's address")
    v = p.add_argument_group("video: a file, a camera (/dev/video0 or 0) or a stream URL "
                             "(pip install 'edgeseg[video]')")
    v.add_argument("--mask-video", action="store_true",
                   help="write <stem>_mask.mkv: class indices, lossless (FFV1 greyscale)")
    v.add_argument("--overlay-video", action="store_true",
                   help="write <stem>_overlay.mp4: class colours over the frames")
    v.add_argument("--png-every", type=count, default=0, metavar="N",
                   help="write a PNG mask of every Nth predicted frame into <stem>_masks/ "
                        "(0: none); a rerun replaces the PNGs of the same name and keeps "
                        "every other file in that folder")
    v.add_argument("--max-frames", type=positive_int,
                   help="stop after this many source frames (a camera or stream runs until stopped)")
    add_model_args(p)
    p.set_defaults(func=run_predict)


def split_models(model: str, inputs: list[str]) -> tuple[list[str], list[str]]:
    """The model files (``model`` and the model files that lead ``inputs``) and the inputs.

    Args:
        model: The first positional argument.
        inputs: The others.

    Returns:
        ``(models, inputs)``.

    Raises:
        EdgesegError: When only model files were given.
    """
    from pathlib import Path

    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.runtime.backends import model_suffixes

    suffixes = model_suffixes()
    n = 0
    while n < len(inputs) and Path(inputs[n]).suffix.lower() in suffixes:
        n += 1
    if n == len(inputs):
        raise EdgesegError(f"{inputs[-1]} is a model file: give the images, rasters or videos "
                           "to predict after the model file(s)")
    return [model, *inputs[:n]], inputs[n:]


def run_predict(args: argparse.Namespace) -> int:
    """Predict every input; returns 0 when all succeeded, 1 when some failed."""
    import sys
    from pathlib import Path

    from firmware_bridge.commands.modelargs import load_segmenter
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.io.inputs import expand_inputs
    from firmware_bridge.io.pairs import IMAGE_SUFFIXES
    from firmware_bridge.io.raster import output_stems
    from firmware_bridge.predict import predict_images
    from firmware_bridge.video.source import is_video_source

    args.models, args.inputs = split_models(args.model, args.inputs)
    videos = [s for s in args.inputs if is_video_source(s)]
    if videos and len(videos) != len(args.inputs):
        raise EdgesegError(f"{videos[0]} is a video and other inputs are not: predict videos "
                           "and images in separate runs")
    if videos:
        return _run_video(args)
    if args.workers or args.scheduler is not None:
        return _run_cluster(args)
    if args.overwrite or args.dashboard or args.connect_timeout or args.worker_timeout:
        raise EdgesegError("--overwrite, --dashboard, --connect-timeout and --worker-timeout go "
                           "with --workers or --scheduler")
    inputs = [str(p) for p in expand_inputs(args.inputs, IMAGE_SUFFIXES)]
    output_stems(inputs)  # two inputs that would write the same file fail before the model loads
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise EdgesegError(f"{args.out}: exists and is not a folder: pass a folder to --out")
    seg = load_segmenter(args)
    failed = predict_images(seg, inputs, args.out, args.bands, args.overlay, args.block,
                            not args.quiet and sys.stderr.isatty(),
                            warn=lambda line: print(line, file=sys.stderr))
    return 1 if failed else 0


def _run_cluster(args: argparse.Namespace) -> int:
    """Predict the scenes on a Dask cluster; 1 when some failed."""
    import sys

    from firmware_bridge.cluster import predict_many
    from firmware_bridge.commands.modelargs import load_segmenter, options_from_args
    from firmware_bridge.errors import EdgesegError

    if args.workers and args.scheduler is not None:
        raise EdgesegError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    if args.overlay:
        raise EdgesegError("--overlay applies to ordinary images, which the cluster path does not take")
    # says which values were assumed for the model, as the other paths do; with several
    # artifacts it times them on this machine and sets args.model to the one chosen
    load_segmenter(args)
    report = predict_many(
        args.model, args.inputs, args.out, workers=args.workers, scheduler=args.scheduler,
        backend=args.backend, options=options_from_args(args), bands=args.bands, block=args.block,
        overwrite=args.overwrite, dashboard=args.dashboard,
        show_progress=not args.quiet and sys.stderr.isatty(),
        **{key: value for key, value in (("connect_timeout", args.connect_timeout),
                                         ("worker_timeout", args.worker_timeout))
           if value is not None})
    for path in report.written:
        print(path)
    for path in report.skipped:
        print(f"skipped {path}: its mask exists (--overwrite predicts it again)", file=sys.stderr)
    print(f"{len(report.written)} scene(s), {report.pixels / 1e6:.1f} MPix in {report.seconds:.1f} s: "
          f"{report.mpix_per_s:.2f} MPix/s on {report.workers} worker(s); "
          f"{len(report.skipped)} skipped, {len(report.failed)} failed", file=sys.stderr)
    return 1 if report.failed else 0


def _run_video(args: argparse.Namespace) -> int:
    """Predict every video source; 1 when some failed."""
    import sys
    from pathlib import Path

    from firmware_bridge.commands.modelargs import load_segmenter
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.predict import predict_videos
    from firmware_bridge.video import VideoOptions, VideoSource

    if args.workers or args.scheduler or args.overlay or args.bands:
        raise EdgesegError("--workers, --scheduler, --overlay and --bands apply to images and "
                           "rasters; videos take --overlay-video, --mask-video, --png-every")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EdgesegError(f"{out}: exists and is not a folder: pass a folder to --out")
    sources = [VideoSource.parse(s) for s in args.inputs]
    stems = [s.stem for s in sources]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise EdgesegError(f"two sources would write {twice[0]}_frames.csv: predict them into "
                           "different --out folders")
    seg = load_segmenter(args)
    options = VideoOptions(args.mask_video, args.overlay_video, args.png_every)
    failed = predict_videos(seg, sources, out, options, args.max_frames,
                            not args.quiet and sys.stderr.isatty(),
                            warn=lambda line: print(line, file=sys.stderr))
    return 1 if failed else 0
