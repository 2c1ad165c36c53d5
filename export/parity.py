"""Parity of every exported artifact with the Keras model, through the device runtime.

Each artifact is opened by :class:`firmware_bridge.runtime.segmenter.Segmenter` (the code a device
runs: its own metadata, normalisation, quantisation, tiling) and predicts the validation
images. Two numbers per artifact:

* **agreement**: share of pixels whose class equals the Keras model's (same tiles, same
  overlap, same blending), over all pixels;
* **mIoU** against the ground truth (the metric core, :mod:`firmware_bridge.metrics`), and
  its drop from the Keras model's mIoU in points (``100 x``).

A float format passes with agreement of at least ``min_agreement`` (99.5 %); a quantized one
(int8, dynamic range) when it loses at most ``max_miou_drop`` points and still agrees with
Keras on ``min_quantized_agreement`` (90 %) of the pixels: the mIoU alone would pass a graph
whose classes are permuted between equally frequent classes, or masks shifted by a tile. The C array is
checked by parsing its ``.cc`` back into bytes and running those on LiteRT.

The artifacts run in a child process (:func:`check_artifacts_isolated`): a runtime that
crashes (a segmentation fault inside a vendor library) fails that artifact with a line saying
so, and a fresh child goes on with the others, instead of the crash killing the export.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from export.formats import FORMATS, Artifact
from firmware_bridge.errors import EdgesegError
from firmware_bridge.evaluate import score
from firmware_bridge.fsutil import atomic_write_bytes
from firmware_bridge.runtime.metadata import read_metadata


@dataclass
class ParityThresholds:
    """Pass limits: agreement for float formats; mIoU lost and a looser agreement for quantized."""

    min_agreement: float = 0.995
    max_miou_drop: float = 3.0
    min_quantized_agreement: float = 0.9


@dataclass
class ParityRow:
    """The parity of one artifact (``miou`` in 0..1, ``miou_drop`` in points)."""

    format: str
    file: str
    precision: str
    size_bytes: int
    agreement: float
    miou: float
    miou_drop: float
    passed: bool
    rule: str
    seconds: float
    error: str | None = None


@dataclass
class ParityReport:
    """All rows, the Keras reference mIoU and the thresholds used."""

    keras_miou: float
    rows: list[ParityRow] = field(default_factory=list)
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    images: int = 0

    @property
    def ok(self) -> bool:
        """True when every artifact passed."""
        return all(row.passed for row in self.rows)

    def failures(self) -> list[str]:
        """One line with the numbers per failed artifact."""
        return [f"{r.format}: {r.error}" if r.error else
                f"{r.format}: agreement {100 * r.agreement:.2f} %, mIoU {r.miou:.4f} "
                f"(Keras {self.keras_miou:.4f}, -{r.miou_drop:.2f} points); needs {r.rule}"
                for r in self.rows if not r.passed]

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes ``None``)."""

        def clean(v):
            return None if isinstance(v, float) and math.isnan(v) else v

        return {"keras_miou": clean(self.keras_miou), "images": self.images, "ok": self.ok,
                "thresholds": asdict(self.thresholds),
                "artifacts": [{k: clean(v) for k, v in asdict(r).items()} for r in self.rows]}

    def write(self, path: str | Path) -> None:
        """Write ``parity.json`` atomically."""
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    def table(self) -> str:
        """A plain-text table, one artifact per line."""
        head = (f"{'format':<16} {'size':>10} {'agree %':>8} {'mIoU':>7} {'drop':>6}  "
                f"{'s':>6}  result")
        lines = [head, f"{'keras':<16} {'':>10} {'100.00':>8} {self.keras_miou:7.4f} {'':>6}"]
        for r in self.rows:
            if r.error:
                lines.append(f"{r.format:<16} {r.size_bytes / 1e6:8.2f}MB  FAIL: {r.error}")
                continue
            lines.append(f"{r.format:<16} {r.size_bytes / 1e6:8.2f}MB {100 * r.agreement:8.2f} "
                         f"{r.miou:7.4f} {r.miou_drop:6.2f}  {r.seconds:6.1f}  "
                         f"{'ok' if r.passed else 'FAIL'} ({r.rule})")
        return "\n".join(lines)


def _segmenter(artifact: Artifact, workdir: Path, threads: int | None):
    from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

    path = artifact.runnable(workdir)
    if path is None:
        raise EdgesegError(f"{artifact.path}: no runtime on this machine opens a {artifact.format} artifact")
    return Segmenter(path, options=SegmenterOptions(threads=threads)), path


def check_artifact(artifact: Artifact, images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                   reference: Sequence[np.ndarray], keras_miou: float,
                   thresholds: ParityThresholds, threads: int | None = None) -> ParityRow:
    """Run one artifact on the images and compare (see the module docstring).

    Args:
        artifact: What :func:`export.formats.export_formats` wrote.
        images: Validation images ``HxWxC`` (8-bit).
        truths: Ground-truth masks (255 = ignore).
        reference: The Keras model's masks of the same images (same tile and overlap).
        keras_miou: The Keras model's mIoU on them.
        thresholds: Pass limits.
        threads: CPU threads for the runtime.

    Returns:
        The parity row.
    """
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        seg, opened = _segmenter(artifact, Path(tmp), threads)
        scored = score(seg, zip(images, truths, strict=True), reference=reference)
        meta = read_metadata(opened)
    miou, agreement = scored.scores.miou, float(scored.agreement)
    drop = 100.0 * (keras_miou - miou)
    quantized = FORMATS[artifact.format].quantized
    if quantized:
        passed = drop <= thresholds.max_miou_drop and agreement >= thresholds.min_quantized_agreement
        rule = (f"drop <= {thresholds.max_miou_drop:g}, "
                f"agreement >= {100 * thresholds.min_quantized_agreement:g} %")
    else:
        passed = agreement >= thresholds.min_agreement
        rule = f"agreement >= {100 * thresholds.min_agreement:g} %"
    precision = meta.precision if meta else "int8"
    return ParityRow(artifact.format, artifact.path.name, precision, artifact.size, agreement,
                     miou, drop, bool(passed), rule, time.monotonic() - t0)


def _child(conn, rest: tuple) -> None:
    """Body of the child process: an artifact in, its row (or refusal) out, until ``None``."""
    from firmware_bridge.errors import EdgesegError

    try:
        while (artifact := conn.recv()) is not None:
            try:
                conn.send(("row", check_artifact(artifact, *rest)))
            except EdgesegError as exc:
                conn.send(("error", str(exc)))
    finally:
        conn.close()


def _signal_name(exitcode: int) -> str:
    import signal

    if exitcode < 0:
        try:
            return f"signal {-exitcode}, {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def _failed(artifact: Artifact, error: str, seconds: float) -> ParityRow:
    return ParityRow(artifact.format, artifact.path.name, "?", artifact.size, 0.0, math.nan,
                     math.nan, False, "runs", seconds, error=error)


def check_artifacts_isolated(artifacts: Sequence[Artifact], images: Sequence[np.ndarray],
                             truths: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                             keras_miou: float, thresholds: ParityThresholds,
                             threads: int | None = None) -> list[ParityRow]:
    """:func:`check_artifact` of each artifact in a child process (``spawn``: no TensorFlow state).

    One child runs the artifacts one after the other; when a runtime crashes it, the artifact
    it was running fails with a line saying so and a fresh child goes on with the rest.

    Returns:
        One row per artifact, in order; a failed row with ``error`` set where the runtime
        crashed or refused the model.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rest = (list(images), list(truths), list(reference), keras_miou, thresholds, threads)
    rows: list[ParityRow] = []
    proc = conn = None
    try:
        for artifact in artifacts:
            if proc is None:
                conn, child_end = ctx.Pipe()
                proc = ctx.Process(target=_child, args=(child_end, rest), daemon=True)
                proc.start()
                child_end.close()
            t0 = time.monotonic()
            try:
                conn.send(artifact)
                kind, value = conn.recv()
            except (EOFError, BrokenPipeError):
                proc.join()
                rows.append(_failed(artifact, f"the runtime crashed ({_signal_name(proc.exitcode)}) "
                                              f"running {artifact.path.name}; the artifact is not "
                                              "usable on this machine", time.monotonic() - t0))
                conn.close()
                proc = conn = None
                continue
            rows.append(value if kind == "row" else _failed(artifact, value, time.monotonic() - t0))
    finally:
        if proc is not None:
            with contextlib.suppress(OSError, EOFError):
                conn.send(None)
            conn.close()
            proc.join(timeout=60)
    return rows


def check_artifact_isolated(artifact: Artifact, images: Sequence[np.ndarray],
                            truths: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                            keras_miou: float, thresholds: ParityThresholds,
                            threads: int | None = None) -> ParityRow:
    """:func:`check_artifacts_isolated` of one artifact."""
    return check_artifacts_isolated([artifact], images, truths, reference, keras_miou, thresholds,
                                    threads)[0]


def keras_reference(model, metadata, images: Sequence[np.ndarray], truths: Sequence[np.ndarray]
                    ) -> tuple[list[np.ndarray], float]:
    """The Keras model's masks and mIoU on the validation images, the reference of every artifact.

    The Keras model runs behind the same ``Segmenter`` as the artifacts
    (:func:`export.keras_backend.keras_segmenter`: same tiles, overlap, blending, threshold).

    Args:
        model: The float Keras model at the export's input size.
        metadata: The run's metadata (classes, normalisation, output kind, overlap).
        images: Validation images.
        truths: Their masks.

    Returns:
        ``(masks, miou)``.
    """
    from export.keras_backend import keras_segmenter

    scored = score(keras_segmenter(model, metadata), zip(images, truths, strict=True), keep_masks=True)
    return scored.masks, scored.scores.miou


def check_parity(artifacts: Sequence[Artifact], images: Sequence[np.ndarray],
                 truths: Sequence[np.ndarray], reference: Sequence[np.ndarray], keras_miou: float,
                 thresholds: ParityThresholds | None = None, threads: int | None = None,
                 log=None) -> ParityReport:
    """Parity of every artifact (see :func:`check_artifact_isolated`) against the Keras reference.

    Returns:
        The report (``.ok``, ``.table()``, ``.write(path)``).
    """
    thresholds = thresholds or ParityThresholds()
    rows = check_artifacts_isolated(artifacts, images, truths, reference, keras_miou, thresholds,
                                    threads)
    for row in rows:
        if log:
            log(f"parity {row.format}: " + (row.error or f"agreement {100 * row.agreement:.2f} %, "
                                                        f"mIoU {row.miou:.4f}"))
    return ParityReport(keras_miou, rows, thresholds, len(images))
