"""Score a trained model on full images: tiled prediction and the device's metric core.

``edgeseg evaluate RUN_OR_MODEL --data DIR --classes FILE`` prints per-class IoU / Dice. The
Keras model runs behind the device's ``Segmenter`` (:mod:`export.keras_backend`) and is scored
by the device's scoring loop (:mod:`firmware_bridge.evaluate`): the numbers are computed exactly
as during training's validation and as ``edgeseg-run validate`` computes them on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseg.data import load_split
from edgeseg.training.runs import is_run_dir, load_run
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.metrics import SegScores

DEFAULT_OVERLAP = 32


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


def model_tile(model) -> int:
    """The square tile edge a fixed-size Keras model takes.

    Raises:
        EdgesegError: When the input is not square or not fixed.
    """
    h, w = model.input_shape[1:3]
    if h is None or w is None or h != w:
        raise EdgesegError(f"tiled prediction needs a fixed square input, the model takes {h}x{w}")
    return int(h)


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
    from edgeseg.data.pipeline import MEAN, STD
    from export.keras_backend import keras_segmenter
    from firmware_bridge.evaluate import score
    from firmware_bridge.runtime.metadata import ModelMetadata

    model = load_model(model_path, tile)
    k = int(model.output_shape[-1])
    if max(k, 2) != max(table.num_classes, 2) or (k == 1) != (table.num_classes == 1):
        raise EdgesegError(
            f"the model outputs {k} channel(s) but the class table has {table.num_classes} classes"
        )
    train, val = load_split(data, table, val_pattern, need_train=False)
    samples = val if val_pattern else train
    if not samples:
        raise EdgesegError(f"no images in {data} match {val_pattern!r}")
    tile = model_tile(model)
    names = table.names if table.num_classes > 1 else ["background", table.names[0]]
    meta = ModelMetadata(classes=table.names, mean=[MEAN], std=[STD],
                         output="sigmoid" if k == 1 else "softmax")
    seg = keras_segmenter(model, meta, overlap)
    scores = score(seg, ((s.image, s.mask) for s in samples), names, progress=progress,
                   total=len(samples)).scores
    return Evaluation(str(model_path), len(samples), tile, overlap, scores)
