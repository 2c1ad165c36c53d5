"""The QAT model of a run: ``<run>/qat/weights.npz`` (weights per layer) and ``qat.json``.

A QAT model is stored as its weights, layer by layer, and rebuilt on load from the run's
configuration (:func:`edgeseg.quantization.qat.build_qat`) at any input size: the architectures are fully
convolutional, and ``.keras`` files of tfmot models fail to load again in tf-keras 2.21
(``quantize_layer`` expects 5 variables and finds 3).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgeseg.quantization.qat import build_qat
from firmware_bridge.errors import EdgesegError
from firmware_bridge.fsutil import atomic_write_bytes

QAT_DIR = "qat"
WEIGHTS = "weights.npz"
SUMMARY = "qat.json"


def has_qat(run_dir) -> bool:
    """Whether ``edgeseg qat`` has written a QAT model into the run."""
    return (Path(run_dir) / QAT_DIR / WEIGHTS).is_file()


def save_qat(qat, run_dir) -> Path:
    """Write the QAT weights (per layer, ``<run>/qat/weights.npz``) atomically."""
    folder = Path(run_dir) / QAT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"{i:04d}_{j:02d}": w for i, layer in enumerate(qat.layers)
              for j, w in enumerate(layer.get_weights())}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(folder / WEIGHTS, buf.getvalue())
    return folder / WEIGHTS


def load_qat(run_dir, config, input_size: tuple[int, int]):
    """Rebuild a run's QAT model at ``input_size`` from ``<run>/qat/weights.npz``.

    Args:
        run_dir: The run directory.
        config: Its :class:`edgeseg.training.train.TrainConfig` (from :func:`edgeseg.training.runs.load_run`).
        input_size: ``(height, width)`` of the rebuilt model.

    Returns:
        The QAT model.

    Raises:
        EdgesegError: When the run has no QAT weights (run ``edgeseg qat RUN``) or they do not
            fit the run's architecture.
    """
    path = Path(run_dir) / QAT_DIR / WEIGHTS
    if not path.is_file():
        raise EdgesegError(f"{run_dir}: no QAT model ({QAT_DIR}/{WEIGHTS}); run 'edgeseg qat {run_dir}'")

    qat = build_qat(config, input_size)
    with np.load(path) as data:
        if len(data.files) != sum(len(layer.get_weights()) for layer in qat.layers):
            raise EdgesegError(f"{path} does not fit {config.arch}/{config.backbone}: re-run 'edgeseg qat'")
        for i, layer in enumerate(qat.layers):
            weights = [data[f"{i:04d}_{j:02d}"] for j in range(len(layer.get_weights()))]
            if weights:
                layer.set_weights(weights)
    return qat
