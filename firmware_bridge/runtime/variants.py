"""Several artifacts of one model (``model_int8.tflite``, ``model_fp32.tflite``): the faster one.

``edgeseg export`` writes one model in several precisions, named ``<stem><suffix>`` (the
suffixes of :data:`PRECISION_SUFFIXES`; ``<stem>.onnx`` is the float ONNX model). Which one
runs faster depends on the CPU (:mod:`firmware_bridge.runtime.cpu`): int8 beats float32 where
the CPU has 8-bit dot-product instructions and not elsewhere. So ``edgeseg-run predict`` takes
several artifacts, checks that they are the same model (:func:`check_same_model`), times each
on a few tiles (:func:`measure_ms`) and keeps the one :func:`choose` picks: the fastest, an
int8 one only when it is at least :data:`~firmware_bridge.runtime.cpu.INT8_MARGIN` times as
fast as the fastest float one (int8 costs some accuracy). The measurement and the decision are
separate: :func:`choose` is pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.cpu import INT8_MARGIN, CpuIsa, int8_pays

PRECISION_SUFFIXES = (("_qat_int8", "int8"), ("_int8", "int8"), ("_dynamic", "dynamic"),
                      ("_fp16", "fp16"), ("_fp32", "fp32"))
"""Name endings (before the file suffix) that ``edgeseg export`` gives each precision."""
QUANTIZED = ("int8", "dynamic")
"""Precisions that trade accuracy for speed: chosen only when they are clearly faster."""
PREFER = ("fast", "int8", "fp32")
"""``--prefer`` values: the fastest (timed), or one precision."""


def name_precision(path: str | Path) -> tuple[str, str | None]:
    """The export stem and precision a model's file name says (``None``: it says none).

    ``model_qat_int8.tflite`` -> ``("model", "int8")``; ``model.onnx`` -> ``("model", "fp32")``
    (the float ONNX export); ``selfie.tflite`` -> ``("selfie", None)``.
    """
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    for ending, precision in PRECISION_SUFFIXES:
        if stem.endswith(ending) and len(stem) > len(ending):
            return stem[: -len(ending)], precision
    return stem, "fp32" if p.suffix.lower() == ".onnx" else None


def precision_of(path: str | Path, seg) -> str:
    """A model's precision: from its file name, else its 8-bit input, else its metadata.

    Args:
        path: The model file.
        seg: Its opened :class:`~firmware_bridge.runtime.segmenter.Segmenter`.

    Returns:
        ``"int8"``, ``"dynamic"``, ``"fp16"`` or ``"fp32"`` (or the metadata's word).
    """
    named = name_precision(path)[1]
    if named:
        return named
    if seg.backend.input.quantized or seg.backend.output.quantized:
        return "int8"
    return seg.meta.precision or "fp32"


def siblings(path: str | Path) -> list[Path]:
    """The other artifacts of the same export beside ``path``: same stem and file suffix.

    ``out/model_int8.tflite`` finds ``out/model_fp32.tflite``, ``out/model_fp16.tflite``,
    ``out/model_qat_int8.tflite`` (those that exist); ``out/model_qat_int8.onnx`` finds
    ``out/model.onnx``. A file whose name carries no precision has none.

    Returns:
        Existing files, in :data:`PRECISION_SUFFIXES` order (the float ONNX last).
    """
    p = Path(path)
    stem, precision = name_precision(p)
    if precision is None:
        return []
    names = [f"{stem}{ending}{p.suffix}" for ending, _ in PRECISION_SUFFIXES]
    if p.suffix.lower() == ".onnx":
        names.append(f"{stem}{p.suffix}")
    return [p.with_name(n) for n in dict.fromkeys(names) if n != p.name and p.with_name(n).is_file()]


def fingerprint(seg) -> dict[str, object]:
    """What must agree between two artifacts of one model: classes, bands, tile, normalisation.

    Args:
        seg: An opened Segmenter.

    Returns:
        ``{what: value}`` in the order a mismatch is reported.
    """
    m = seg.meta
    return {"classes": list(seg.class_names), "bands": seg.channels,
            "tile": "x".join(str(v) for v in seg.tile), "overlap": seg.overlap,
            "output": m.output, "mean": list(m.mean), "std": list(m.std), "scale": m.scale}


def check_same_model(paths: Sequence[str | Path], segs: Sequence) -> None:
    """Refuse artifacts that are not the same model (another class list, tile, band count...).

    Raises:
        EdgesegError: Naming the two files and the first thing that differs.
    """
    first = fingerprint(segs[0])
    for path, seg in zip(paths[1:], segs[1:], strict=True):
        other = fingerprint(seg)
        for what, value in first.items():
            if other[what] != value:
                raise EdgesegError(
                    f"{Path(paths[0]).name} and {Path(path).name} are not the same model: "
                    f"{what} {_show(value)} against {_show(other[what])}; give artifacts of one "
                    "export (e.g. model_int8.tflite model_fp32.tflite)")


def _show(value: object) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def measure_ms(segs: Sequence, rounds: int = 6, warmup: int = 2) -> list[float]:
    """Milliseconds per tile of each model on generated tiles, the models taking turns.

    Each round runs one batch (``options.batch`` tiles) through every model in turn, so that
    the load of the moment falls on all of them alike; the first ``warmup`` rounds are not
    counted (thread pools and caches settle). The median of the rounds is kept.

    Args:
        segs: Opened Segmenters of the same tile size and bands.
        rounds: Timed rounds.
        warmup: Untimed rounds first.

    Returns:
        Median milliseconds per tile, one per model.
    """
    from firmware_bridge.io.synthetic_raster import synthetic_block

    th, tw = segs[0].tile
    batch = max(s.options.batch for s in segs)
    tile = np.stack(synthetic_block(0, 0, th, tw, segs[0].channels, np.uint8), axis=-1)
    tiles = np.repeat(tile[None], batch, axis=0)
    times: list[list[float]] = [[] for _ in segs]
    for r in range(warmup + rounds):
        for i, seg in enumerate(segs):
            t0 = time.perf_counter()
            seg.scores(tiles)
            if r >= warmup:
                times[i].append((time.perf_counter() - t0) * 1e3 / batch)
    return [float(np.median(t)) for t in times]


@dataclass(frozen=True)
class Choice:
    """The artifact :func:`choose` picked and why.

    Attributes:
        index: Its position in the candidates.
        reason: Why, for the user (one clause).
    """

    index: int
    reason: str


def choose(names: Sequence[str], precisions: Sequence[str], ms: Sequence[float],
           isa: CpuIsa | None = None, margin: float = INT8_MARGIN) -> Choice:
    """The artifact to use, from measured times (pure: no clock, no model).

    The fastest float artifact and the fastest quantized one (:data:`QUANTIZED`) are compared:
    the quantized one wins only at ``margin`` times the float one's speed or more; with only
    one kind, the fastest.

    Args:
        names: The artifacts' names.
        precisions: Their precisions (:func:`precision_of`).
        ms: Their times per tile.
        isa: This CPU (named in the reason where it explains a float choice).
        margin: How much faster a quantized artifact must be.

    Returns:
        The choice.

    Raises:
        ValueError: For no candidate, or lists of different lengths.
    """
    if not names or not len(names) == len(precisions) == len(ms):
        raise ValueError(f"{len(names)} names, {len(precisions)} precisions, {len(ms)} times")
    quant = [i for i, p in enumerate(precisions) if p in QUANTIZED]
    flt = [i for i, p in enumerate(precisions) if p not in QUANTIZED]
    if not quant or not flt:
        best = min(range(len(ms)), key=lambda i: ms[i])
        if len(ms) == 1:
            return Choice(best, "the only one")
        return Choice(best, "the fastest")
    q = min(quant, key=lambda i: ms[i])
    f = min(flt, key=lambda i: ms[i])
    ratio = ms[f] / ms[q]
    if int8_pays(ms[q], ms[f], margin):
        return Choice(q, f"{names[q]} runs {ratio:.2f}x the speed of {names[f]}")
    cpu = f" (this CPU: {isa.describe()})" if isa is not None else ""
    return Choice(f, f"{names[q]} runs {ratio:.2f}x the speed of {names[f]}, under the "
                     f"{margin:.2f}x that pays for {precisions[q]}'s accuracy loss{cpu}")


def restrict(precisions: Sequence[str], prefer: str) -> list[int]:
    """The candidates ``--prefer`` leaves: all for ``fast``, else those of that precision.

    Raises:
        EdgesegError: When none has the precision asked for.
    """
    if prefer not in PREFER:
        raise EdgesegError(f"prefer must be one of {', '.join(PREFER)}, got {prefer!r}")
    if prefer == "fast":
        return list(range(len(precisions)))
    kept = [i for i, p in enumerate(precisions) if p == prefer]
    if not kept:
        raise EdgesegError(f"--prefer {prefer}: no {prefer} artifact among them (they are "
                           f"{', '.join(sorted(set(precisions)))})")
    return kept


def open_fastest(paths: Sequence[str | Path], open_model: Callable[[Path], object],
                 prefer: str = "fast", isa: CpuIsa | None = None,
                 measure: Callable[[Sequence], list[float]] | None = None,
                 say: Callable[[str], None] | None = None) -> tuple[Path, object]:
    """Open every artifact, check they are one model, time them and keep the one to use.

    Args:
        paths: The artifacts (one alone is opened and returned, untimed).
        open_model: Opens one (``path -> Segmenter``).
        prefer: ``"fast"``, or the precision to keep (:func:`restrict`).
        isa: This CPU (:func:`~firmware_bridge.runtime.cpu.cpu_isa`; named in the line).
        measure: Times the Segmenters (``None``: :func:`measure_ms`).
        say: Receives the one line of times and the choice (``None``: nothing said).

    Returns:
        ``(path, Segmenter)`` of the artifact to use; the others are dropped.

    Raises:
        EdgesegError: For artifacts of different models, a precision none has, or one that
            does not open.
    """
    paths = [Path(p) for p in dict.fromkeys(str(p) for p in paths)]
    segs = [open_model(p) for p in paths]
    if len(segs) > 1:
        check_same_model(paths, segs)
    precisions = [precision_of(p, s) for p, s in zip(paths, segs, strict=True)]
    kept = restrict(precisions, prefer)
    if len(kept) == 1:
        pick = kept[0]
        if say and (len(paths) > 1 or prefer != "fast"):
            why = f"--prefer {prefer}" if len(paths) > 1 else "no other artifact of it beside it"
            say(f"using {paths[pick].name} ({precisions[pick]}): {why}")
        return paths[pick], segs[pick]
    names = [paths[i].name for i in kept]
    kept_precisions = [precisions[i] for i in kept]
    ms = (measure or measure_ms)([segs[i] for i in kept])
    choice = choose(names, kept_precisions, ms, isa)
    pick = kept[choice.index]
    if say:
        th, tw = segs[pick].tile
        times = ", ".join(f"{n} ({p}) {t:.2f} ms" for n, p, t in zip(names, kept_precisions, ms,
                                                                      strict=True))
        say(f"timed on {th}x{tw} tiles: {times} per tile; using {paths[pick].name}: "
            f"{choice.reason}")
    return paths[pick], segs[pick]
