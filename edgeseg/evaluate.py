"""Score a trained model on full images: tiled prediction and the device's metric core.

``edgeseg evaluate RUN_OR_MODEL --data DIR --classes FILE`` prints per-class IoU / Dice; the
numbers are computed exactly as during training's validation and as ``edgeseg-run validate``
computes them on the device (:mod:`edgeseg.inference`, :mod:`firmware_bridge.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseg.data import load_split
from edgeseg.inference import DEFAULT_OVERLAP, evaluate_samples, keras_predictor, model_tile
from edgeseg.runs import is_run_dir, load_run
from firmware_bridge.classes import ClassTable
from firmware_bridge.errors import EdgesegError
from firmware_bridge.metrics import SegScores


@dataclass
class Evaluation:
    """Scores of one model on one image set."""

    model: str
    images: int
    tile: int
    overlap: int
    scores: SegScores

    def to_dict(self) -> dict:
        """JSON-ready dict: the metric core's scores plus what was evaluated."""
        return {"model": self.model, "images": self.images, "tile": self.tile,
                "overlap": self.overlap, **self.scores.to_dict()}


def load_model(path, tile: int | None = None):
    """Load a run directory's best model or a Keras model file.

    Args:
        path: Run directory, or a ``.keras`` / ``.h5`` model file.
        tile: Rebuild a run's model at this square input size (``None``: as saved).

    Returns:
        The Keras model.

    Raises:
        EdgesegError: When the path is neither, or ``tile`` is asked of a bare model file.
    """
    from edgeseg.tf_env import tf_keras

    path = Path(path)
    if is_run_dir(path):
        return load_run(path, (tile, tile) if tile else None)[0]
    if path.is_file() and path.suffix in (".keras", ".h5"):
        if tile:
            raise EdgesegError("--tile needs a run directory (a bare model file keeps its input size)")
        _, keras = tf_keras()
        return keras.models.load_model(path, compile=False)
    raise EdgesegError(f"{path}: neither an edgeseg run directory nor a .keras / .h5 model file")


def evaluate(
    model_path, data: str, table: ClassTable, val_pattern: str | None = None,
    tile: int | None = None, overlap: int = DEFAULT_OVERLAP, progress: bool = False,
) -> Evaluation:
    """Evaluate a model on a dataset folder.

    Args:
        model_path: Run directory or model file.
        data: Dataset folder (``images/`` + ``masks/``).
        table: Class table; its classes must match the model's outputs.
        val_pattern: Evaluate only stems matching this glob (e.g. ``"tile7_*"``); ``None``: all.
        tile: Tile edge (a run's model is rebuilt at this size); ``None``: the model's input.
        overlap: Tile overlap in pixels.
        progress: Show a progress bar.

    Returns:
        The evaluation.

    Raises:
        EdgesegError: Class count mismatch, no images, unreadable model or data.
    """
    model = load_model(model_path, tile)
    k = int(model.output_shape[-1])
    if max(k, 2) != max(table.num_classes, 2) or (k == 1) != (table.num_classes == 1):
        raise EdgesegError(
            f"the model outputs {k} channel(s) but the class table has {table.num_classes} classes"
        )
    train, val = load_split(data, table, val_pattern)
    samples = val if val_pattern else train
    if not samples:
        raise EdgesegError(f"no images in {data} match {val_pattern!r}")
    tile = model_tile(model)
    names = table.names if table.num_classes > 1 else ["background", table.names[0]]
    scores = evaluate_samples(keras_predictor(model), samples, max(k, 2), tile, overlap, names,
                              progress)
    return Evaluation(str(model_path), len(samples), tile, overlap, scores)
