"""Exports the benchmark makes itself: when no artifacts are given, or a size has none.

Exported models are fixed-size (dilated and transposed convolutions refuse
``resize_tensor_input``), so measuring at another tile size needs an export at that size.
The run's Keras model is rebuilt at the size with the same weights
(:func:`edgeseg.runs.load_run`) and goes through the export dispatcher
(:func:`export.formats.export_formats`), calibrated on crops of the training images. The
accuracy section then scores what no ``parity.json`` covers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeseg.bench.options import BenchOptions, require_data
from firmware_bridge.errors import EdgesegError

CALIBRATION_IMAGES = 64


def calibration_crops(data: Path, classes: Path, val_pattern: str, size: int,
                      count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """Normalised ``size x size`` crops of the training images (not the validation ones).

    Args:
        data: Dataset folder.
        classes: Class table CSV (pairing and decoding need it).
        val_pattern: Stems left out (validation).
        size: Crop edge; smaller images are reflect-padded.
        count: Crops, spread evenly over the training images.
        seed: Crop positions.

    Returns:
        ``(count, size, size, C)`` float32, normalised as in training.
    """
    from edgeseg.data.pipeline import normalise
    from firmware_bridge.imageio import read_image
    from firmware_bridge.pairs import find_pairs, split_by_pattern
    from firmware_bridge.tiling import pad_to_tile

    train = split_by_pattern(find_pairs(data).pairs, val_pattern)[0]
    if not train:
        raise EdgesegError(f"{data}: no training images outside {val_pattern!r} to calibrate on")
    rng = np.random.default_rng(seed)
    per = [count // len(train) + (i < count % len(train)) for i in range(len(train))]
    crops = []
    for pair, n in zip(train, per, strict=True):
        if n == 0:
            continue
        image = pad_to_tile(read_image(pair.image), size)
        h, w = image.shape[:2]
        for _ in range(n):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            crops.append(normalise(image[y : y + size, x : x + size]))
    return np.stack(crops).astype(np.float32)


def export_run(opts: BenchOptions, folder: Path, formats: tuple[str, ...] | None, size: int | None,
               log: Callable[[str], None]) -> list[Path]:
    """Export ``opts.run`` into ``folder`` through the export dispatcher.

    Args:
        opts: Benchmark options (run, data, classes, validation pattern).
        folder: Output folder.
        formats: Format names (``None``: every default format that needs no QAT model).
        size: Square input size (``None``: the run's own).
        log: Progress lines.

    Returns:
        The files written.

    Raises:
        EdgesegError: Without a run or data, or when a conversion fails (the folder is then
            left as it was).
    """
    from edgeseg.runs import load_run, run_metadata
    from export import ExportContext, ExportOptions, default_formats, export_formats, parse_formats

    if opts.run is None:
        raise EdgesegError("exporting needs --run RUN")
    data = require_data(opts.data_dir)
    names = [f for f in (formats or default_formats(with_qat=False)) if f != "tflite-qat-int8"]
    if formats and "tflite-qat-int8" in formats:
        log("[export] tflite-qat-int8 left out: export the QAT model with 'edgeseg export' and "
            "pass its folder with --artifacts")
    model, _ = load_run(opts.run, (size, size) if size else None)
    edge = int(model.input_shape[1])
    calib = calibration_crops(data, opts.classes_file, opts.val_pattern, edge)
    ctx = ExportContext(model=model, meta=run_metadata(opts.run), calibration=calib,
                        options=ExportOptions(stem="model"))
    done = export_formats(ctx, parse_formats(names, with_qat=False), folder,
                          log=lambda line: log(f"[export] {line}"))
    return [f for artifact in done for f in artifact.files]
