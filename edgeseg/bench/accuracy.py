"""Accuracy: validation mIoU of the Keras model and of every artifact.

Where an export folder holds ``parity.json`` (written by ``edgeseg export`` after checking each
artifact through ``firmware_bridge`` on the validation images) its numbers are taken as they
are. Artifacts it does not cover are computed here the same way, by the one scoring loop
(:func:`firmware_bridge.evaluate.score`); with the run's Keras model at hand, its masks (the
Keras model behind the same ``Segmenter``: same tiles and overlap) give the pixel agreement
and the mIoU drop in points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.bench.artifacts import ArtifactInfo, ParityFile
from edgeseg.data import load_sample
from export.keras_backend import keras_segmenter
from firmware_bridge.errors import EdgesegError
from firmware_bridge.evaluate import score
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.images import overlay, write_png
from firmware_bridge.io.pairs import find_pairs, split_by_pattern
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

KerasLoader = Callable[[int], object]


@dataclass
class AccuracyRow:
    """Validation scores of one model.

    Attributes:
        label: Artifact label, or ``keras`` (``keras@size`` with several sizes).
        format: Export format (``keras`` for the Keras model).
        precision: ``fp32``, ``int8``...
        resolution: Tile edge the model predicted with (``None``: dynamic).
        miou: Mean IoU against the ground truth, 0..1.
        agreement: Share of pixels with the Keras model's class (``None`` where unknown, and
            for the Keras model, the reference).
        miou_drop: Keras mIoU minus this one, in points (``None`` where unknown or Keras).
        source: ``parity.json`` (of the export) or ``computed`` (here).
        images: Validation images scored.
    """

    label: str
    format: str
    precision: str
    resolution: int | None
    miou: float | None
    agreement: float | None
    miou_drop: float | None
    source: str
    images: int


@dataclass
class ValidationSet:
    """Validation images with their ground-truth masks, and the class count."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    num_classes: int
    stems: list[str]


def validation_pairs(data: Path, pattern: str) -> list:
    """The image/mask pairs whose stems match ``pattern`` (file names only, nothing decoded).

    Raises:
        EdgesegError: When pairing finds problems or nothing matches.
    """
    pairing = find_pairs(data)
    if pairing.problems:
        raise EdgesegError(f"{data}: {pairing.problems[0]} (run 'edgeseg data check {data}')")
    val = split_by_pattern(pairing.pairs, pattern, need_train=False)[1]
    if not val:
        raise EdgesegError(f"{data}: no image matches the validation pattern {pattern!r}")
    return val


def load_validation(data: Path, classes: Path, pattern: str) -> ValidationSet:
    """Decode the validation images and masks (only those; the training set is not read)."""
    table = ClassTable.load(classes)
    samples = [load_sample(p, table) for p in validation_pairs(data, pattern)]
    return ValidationSet([s.image for s in samples], [s.mask for s in samples],
                         max(table.num_classes, 2), [s.stem for s in samples])


def _parity_rows(artifacts: list[ArtifactInfo], parities: dict[Path, ParityFile],
                 several_sizes: bool) -> tuple[list[AccuracyRow], list[ArtifactInfo]]:
    rows, missing = [], []
    for folder, parity in parities.items():
        here = [a for a in artifacts if a.path.parent == folder]
        res = next((a.resolution for a in here if a.resolution), None)
        if parity.keras_miou is not None:
            rows.append(AccuracyRow("keras" + (f"@{res}" if several_sizes and res else ""), "keras",
                                    "fp32", res, parity.keras_miou, None, None, "parity.json",
                                    parity.images))
    for a in artifacts:
        entry = parities.get(a.path.parent)
        entry = entry.entries.get(a.path.name) if entry else None
        if entry is None or entry.miou is None:
            missing.append(a)
            continue
        rows.append(AccuracyRow(a.label, a.format, a.precision, a.resolution, entry.miou,
                                entry.agreement, entry.miou_drop, "parity.json",
                                parities[a.path.parent].images))
    return rows, missing


def compute_rows(missing: list[ArtifactInfo], val: ValidationSet, threads: int,
                 keras: KerasLoader | None, have_keras: set[int | None], several_sizes: bool,
                 log: Callable[[str], None] = print) -> list[AccuracyRow]:
    """Score artifacts that ``parity.json`` does not cover (see the module docstring).

    Args:
        missing: Runnable artifacts to score.
        val: Validation set.
        threads: Runtime threads.
        keras: Keras model loader (for agreement and the Keras mIoU); ``None``: mIoU only.
        have_keras: Sizes whose Keras mIoU is already known (no Keras row is added for them).
        several_sizes: Label Keras rows with their size.
        log: Progress lines.

    Returns:
        The computed rows (Keras rows first for each size).
    """
    rows: list[AccuracyRow] = []
    n = len(val.images)
    reference: dict[tuple[int, int], tuple[list[np.ndarray], float]] = {}
    for a in missing:
        seg = Segmenter(a.path, options=SegmenterOptions(threads=threads))
        key = (seg.tile[0], seg.overlap)
        ref = None
        if keras is not None and seg.tile[0] == seg.tile[1]:
            if key not in reference:
                kseg = keras_segmenter(keras(key[0]), seg.meta, overlap=key[1])
                scored = score(kseg, zip(val.images, val.masks, strict=True), keep_masks=True)
                reference[key] = (scored.masks, scored.scores.miou)
                if a.resolution not in have_keras:
                    label = "keras" + (f"@{key[0]}" if several_sizes else "")
                    rows.append(AccuracyRow(label, "keras", "fp32", key[0], reference[key][1],
                                            None, None, "computed", n))
                    have_keras.add(a.resolution)
            ref = reference[key][0]
        scored = score(seg, zip(val.images, val.masks, strict=True), reference=ref)
        miou = scored.scores.miou
        drop = None if ref is None else 100.0 * (reference[key][1] - miou)
        rows.append(AccuracyRow(a.label, a.format, a.precision, a.resolution, miou, scored.agreement,
                                drop, "computed", n))
        log(f"[accuracy] {a.label:<16} mIoU {miou:.4f} (computed on {n} images)")
    return rows


def accuracy_section(artifacts: list[ArtifactInfo], parities: dict[Path, ParityFile],
                     load_val: Callable[[], ValidationSet] | None, threads: int,
                     keras: KerasLoader | None = None,
                     log: Callable[[str], None] = print) -> tuple[list[AccuracyRow], list[str]]:
    """The mIoU of the Keras model and every artifact: from ``parity.json``, else computed.

    Args:
        artifacts: Artifacts found.
        parities: Export folder -> its ``parity.json``.
        load_val: Loads the validation set when something must be computed (``None``: no
            data, uncovered artifacts are reported as notes).
        threads: Runtime threads.
        keras: Keras model loader for agreement and the Keras mIoU.
        log: Progress lines.

    Returns:
        ``(rows, notes)``.
    """
    sizes = {a.resolution for a in artifacts if a.resolution}
    several = len(sizes) > 1
    rows, missing = _parity_rows(artifacts, parities, several)
    for r in rows:
        log(f"[accuracy] {r.label:<16} mIoU {r.miou:.4f} (from parity.json, {r.images} images)")
    notes = []
    skipped = [a for a in missing if not a.runnable]
    missing = [a for a in missing if a.runnable]
    if skipped:
        notes.append("accuracy: not in parity.json and not runnable here: "
                     + ", ".join(a.label for a in skipped))
    if missing and load_val is None:
        notes.append("accuracy: no validation data, not computed for "
                     + ", ".join(a.label for a in missing))
    elif missing:
        have = {r.resolution for r in rows if r.format == "keras"}
        rows += compute_rows(missing, load_val(), threads, keras, have, several, log)
    return rows, notes


def write_overlay(path: Path, model: Path, data: Path, classes: Path, pattern: str,
                  threads: int, step: int = 3) -> str:
    """The first validation image, its ground truth and a model's prediction, side by side.

    Args:
        path: PNG to write.
        model: Artifact that predicts (tiled, as on the device).
        data: Dataset folder.
        classes: Class table CSV (colours of truth and prediction).
        pattern: Validation stems.
        threads: Runtime threads.
        step: Keep every ``step``-th pixel in both axes (smaller file).

    Returns:
        The stem of the image shown.
    """
    table = ClassTable.load(classes)
    sample = load_sample(validation_pairs(data, pattern)[0], table)
    mask = Segmenter(model, options=SegmenterOptions(threads=threads)).predict_tiled(sample.image).mask
    rgb = overlay(sample.image, np.zeros_like(sample.image[..., :3]), alpha=0.0)
    gap = np.full((rgb.shape[0], 16, 3), 255, np.uint8)
    panel = np.concatenate([rgb, gap, overlay(sample.image, table.colourise(sample.mask)), gap,
                            overlay(sample.image, table.colourise(mask))], axis=1)
    write_png(path, np.ascontiguousarray(panel[::step, ::step]))
    return sample.stem
