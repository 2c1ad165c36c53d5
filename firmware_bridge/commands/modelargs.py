"""Model options shared by ``predict``, ``validate`` and ``bench``.

This is the command-line edge of :class:`~firmware_bridge.runtime.segmenter.SegmenterOptions`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from firmware_bridge.cliutil import count, positive_float, positive_int
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.backends import BACKENDS, KERNELS
from firmware_bridge.runtime.metadata import (
    OUTPUT_KINDS,
    RESIZE_BACKS,
    RESIZE_FILTERS,
    RESIZE_MODES,
)


def _numbers(test: Callable[[float], bool], what: str) -> Callable[[str], list[float]]:
    """An argparse ``type=`` for comma-separated numbers that each pass ``test``.

    Args:
        test: Whether one value is acceptable.
        what: What each value must be, for the message (``"a finite number"``).

    Returns:
        The parser of one option value.
    """
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers separated by "
                                             "commas")
        bad = [v for v in values if not test(v)]
        if bad and len(values) == 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        if bad:
            raise argparse.ArgumentTypeError(f"{text!r} holds {bad[0]:g}, not {what}")
        return values

    parse.__name__ = what  # argparse names the type in some messages
    return parse


_finite = _numbers(math.isfinite, "a finite number")
"""``type=`` of ``--mean``: NaN or infinity would make every input value NaN."""
_positive_finite = _numbers(lambda v: math.isfinite(v) and v > 0, "a finite number above 0")
"""``type=`` of ``--std``: 0 or infinity divides every pixel into NaN, infinity or 0."""


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas: {text!r}") from exc


def add_model_args(p: argparse.ArgumentParser, tiling: bool = True, bands: bool = True) -> None:
    """Add backend, tiling, input and foreign-model options to a sub-command.

    ``predict``, ``validate`` and ``bench`` take them all, so that one model's options carry
    from one command to the next.

    Args:
        p: The sub-command's parser.
        tiling: Add the tiling options (``--tile``, ``--resize``, ...).
        bands: Add ``--bands`` (commands that read image files).
    """
    g = p.add_argument_group("backend")
    g.add_argument("--backend", help=f"{', '.join(BACKENDS)} (default: from the model file's suffix)")
    g.add_argument("--threads", type=positive_int, help="CPU threads")
    g.add_argument("--device", help="OpenVINO device: CPU, GPU, NPU, AUTO")
    g.add_argument("--providers", help="ONNX Runtime providers, comma-separated, first preferred")
    g.add_argument("--delegate", help="LiteRT external delegate library (e.g. libedgetpu.so.1)")
    g.add_argument("--kernels", choices=KERNELS, default="default",
                   help="LiteRT only: 'reference' runs every operator on LiteRT's reference "
                        "kernels, whose rounding is TensorFlow Lite Micro's, so that the masks "
                        "are a microcontroller's exactly (many times slower; no XNNPACK, no "
                        "delegate); 'default': XNNPACK and the optimised kernels")
    if tiling:
        t = p.add_argument_group("tiling")
        t.add_argument("--tile", type=positive_int, help="tile edge (dynamic-size models only)")
        t.add_argument("--overlap", type=count, help="tile overlap in pixels")
        t.add_argument("--resize", choices=RESIZE_MODES,
                       help="how images of another size meet the model: 'tile' (overlapping "
                            "tiles at full resolution), 'fit' (resized to the model's input "
                            "keeping the aspect ratio, padded, predicted once) or 'stretch' "
                            "(resized to the input); the scores are resized back before the "
                            "argmax (--resize-back). Default: the model's recommendation, else "
                            "tile. GeoTIFFs are always tiled")
        t.add_argument("--resize-filter", choices=RESIZE_FILTERS,
                       help="with --resize fit or stretch, how the pixels are resized: "
                            "'antialias' (the default: bilinear with antialiasing) or "
                            "'bilinear' (as OpenCV's cv2.resize INTER_LINEAR, no antialiasing, "
                            "as many publishers' demos resize)")
        t.add_argument("--resize-back", choices=RESIZE_BACKS,
                       help="with --resize fit or stretch, what is resized back to the image: "
                            "'scores' (the default: bilinearly, before the argmax or "
                            "thresholds) or 'mask' (the finished mask by nearest neighbour, as "
                            "cv2.resize INTER_NEAREST, as demos resize their masks)")
        t.add_argument("--batch", type=positive_int, default=1, help="tiles per inference call")
        t.add_argument("--tta", choices=("none", "flips"), default="none",
                       help="test-time augmentation: 'flips' averages each tile with its left-right "
                            "and top-bottom mirror images (3x the inference)")
        t.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                       help="run the model in the calling thread, not one batch ahead on its own "
                            "(same masks; for measuring, or one core per process)")
    f = p.add_argument_group("foreign models (override the file's metadata)")
    f.add_argument("--mean", type=_finite, help="per-channel mean, e.g. 123.7,116.3,103.5")
    f.add_argument("--std", type=_positive_finite,
                   help="per-channel std, above 0: input = (pixel * scale - mean) / std")
    f.add_argument("--scale", type=positive_float,
                   help="multiplier applied to the pixels before --mean and --std, e.g. 0.00392157 "
                        "for inputs in [0, 1] or 2e-5 for reflectances; with --scale, --mean and "
                        "--std are in scaled units and default to 0 and 1")
    f.add_argument("--layout", type=str.upper, choices=("NHWC", "NCHW"), help="input layout")
    f.add_argument("--classes", dest="class_names", metavar="NAMES|FILE",
                   help="class names, comma-separated, a labels .txt (one name per line) or a "
                        "class table CSV")
    f.add_argument("--threshold", type=_finite, metavar="T|T1,T2,...",
                   help="sigmoid threshold, between 0 and 1 (default 0.5); for multilabel one "
                        "for every class or one per class")
    f.add_argument("--output-kind", choices=OUTPUT_KINDS,
                   help="what the output channels hold: softmax or logits (one class per "
                        "pixel), sigmoid (one foreground channel), multilabel or "
                        "multilabel-logits (one independent sigmoid per class, no background "
                        "channel: label 0 is none, channel c is label c+1, the highest score "
                        "wins where several pass their threshold)")
    if bands:
        add_bands_arg(p)


def add_bands_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--bands``."""
    p.add_argument("--bands", type=_ints, help="1-based input bands to use, e.g. 3,2,1")


def class_names_arg(text: str | None) -> list[str] | None:
    """Class names from ``--classes``: comma-separated names, a labels ``.txt`` or a class table CSV.

    Raises:
        EdgesegError: For an unreadable or malformed file, or no name at all.
    """
    if text is None:
        return None
    if Path(text).suffix.lower() in (".csv", ".txt"):
        from firmware_bridge.io.classes import ClassTable

        return ClassTable.load(text).names
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise EdgesegError(f"--classes {text!r}: give class names, comma-separated, a labels .txt "
                           "or a class table CSV")
    return names


def options_from_args(args: argparse.Namespace):
    """Build :class:`SegmenterOptions` from parsed arguments.

    Raises:
        EdgesegError: For values out of range (``--tile 0``, ``--threshold 2``, ...).
    """
    from firmware_bridge.runtime.segmenter import SegmenterOptions

    providers = tuple(v.strip() for v in args.providers.split(",")) if args.providers else None
    return SegmenterOptions(
        threads=args.threads, device=args.device, providers=providers, delegate=args.delegate,
        tile=getattr(args, "tile", None), overlap=getattr(args, "overlap", None),
        batch=getattr(args, "batch", 1), mean=args.mean, std=args.std, scale=args.scale,
        layout=args.layout, pipeline=getattr(args, "pipeline", True),
        tta=None if getattr(args, "tta", "none") == "none" else args.tta,
        classes=class_names_arg(args.class_names), output=args.output_kind,
        threshold=args.threshold[0] if args.threshold and len(args.threshold) == 1 else None,
        class_thresholds=args.threshold if args.threshold and len(args.threshold) > 1 else None,
        resize=getattr(args, "resize", None),
        resize_filter=getattr(args, "resize_filter", None) or RESIZE_FILTERS[0],
        resize_back=getattr(args, "resize_back", None) or RESIZE_BACKS[0],
        kernels=None if getattr(args, "kernels", "default") == "default" else args.kernels,
    )


def model_candidates(args: argparse.Namespace) -> list[str]:
    """The model artifacts to choose from.

    ``args.models`` (else ``args.model``); with ``--prefer`` and one model, also the other
    artifacts of its export beside it (:func:`~firmware_bridge.runtime.variants.siblings`).

    Returns:
        The paths, the given ones first.
    """
    from firmware_bridge.runtime.variants import siblings

    paths = list(getattr(args, "models", None) or [args.model])
    if len(paths) == 1 and getattr(args, "prefer", None):
        paths += [str(p) for p in siblings(paths[0])]
    return paths


def load_segmenter(args: argparse.Namespace):
    """Open ``args.model`` with the options given on the command line.

    With several artifacts of one model (``args.models``, or ``--prefer``: see
    :func:`model_candidates`), each is opened and timed on a few tiles, and the one
    :func:`~firmware_bridge.runtime.variants.open_fastest` picks is kept, with one line on
    stderr giving the times and the reason; ``args.model`` is set to it.

    When any of normalisation, layout, band order, output kind, class names or (for a fixed
    input size) tiling is a default (neither in the model's metadata nor given), one line on
    stderr says which values were assumed and the options that set them (:func:`say_assumed`).

    Raises:
        EdgesegError: For a model that does not open, or artifacts of different models.
    """
    import sys

    from firmware_bridge.runtime.cpu import cpu_isa
    from firmware_bridge.runtime.segmenter import Segmenter
    from firmware_bridge.runtime.variants import open_fastest

    options = options_from_args(args)
    paths = model_candidates(args)
    if len(paths) == 1 and not getattr(args, "prefer", None):
        seg = Segmenter(args.model, args.backend, options)
    else:
        path, seg = open_fastest(
            paths, lambda p: Segmenter(p, args.backend, options),
            getattr(args, "prefer", None) or "fast",
            cpu_isa(), say=lambda line: print(f"edgeseg-run: {line}", file=sys.stderr, flush=True))
        args.model = str(path)
    say_assumed(seg, args)
    return seg


def say_assumed(seg, args: argparse.Namespace, stream=None) -> str | None:
    """Print the one line of values assumed for ``seg``'s model (nothing when none were).

    Args:
        seg: The opened :class:`~firmware_bridge.runtime.segmenter.Segmenter`.
        args: The command line (``--bands`` given sets the band order).
        stream: Where to print (``None``: stderr).

    Returns:
        The line printed, or ``None``.
    """
    import sys

    from firmware_bridge.runtime.modelspec import Assumed, assumed_line

    has_bands = hasattr(args, "bands")
    assumed = []
    for a in seg.assumed:
        if a.what == "bands":
            if getattr(args, "bands", None):
                continue
            if not has_bands:  # this command has no --bands
                a = Assumed(a.what, a.value, "")
        if a.what == "resize" and not hasattr(args, "resize"):  # nor --resize
            a = Assumed(a.what, a.value, "")
        assumed.append(a)
    if not assumed:
        return None
    line = f"edgeseg-run: {assumed_line(args.model, assumed)}"
    print(line, file=stream or sys.stderr, flush=True)
    return line
