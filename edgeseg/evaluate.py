"""Score a trained model on full images: tiled prediction and the device's metric core.

``edgeseg evaluate RUN_OR_MODEL --data DIR`` prints per-class IoU / Dice. The Keras model runs
behind the device's ``Segmenter`` (:mod:`export.keras_backend`) with the run's own run-time
spec (:func:`edgeseg.spec.run_spec`: normalisation, tile, overlap) and is scored by the
device's scoring loop (:mod:`firmware_bridge.evaluate`): on the run's validation images the
numbers are training's validation numbers, and ``edgeseg-run validate`` computes them the same
way on the device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edgeseg.data import load_split
from edgeseg.data.pipeline import MEAN, STD
from edgeseg.spec import output_kind, run_spec, spec_table
from edgeseg.tf_env import tf_keras
from edgeseg.training.runs import is_run_dir, load_config, load_run
from export.keras_backend import keras_segmenter
from firmware_bridge.errors import EdgesegError
from firmware_bridge.evaluate import score
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.metrics import SegScores
from firmware_bridge.runtime.metadata import ModelMetadata


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
        tile: Rebuild a run's model at this square input size (``None``: the run's tile).

    Returns:
        The Keras model.

    Raises:
        EdgesegError: When the path is neither, or ``tile`` is asked of a bare model file.
    """
    path = Path(path)
    if is_run_dir(path):
        edge = tile or run_spec(path).tile_size
        return load_run(path, (edge, edge))[0]
    if path.is_file() and path.suffix in (".keras", ".h5"):
        if tile:
            raise EdgesegError("--tile needs a run directory (a bare model file keeps its input size)")
        _, keras = tf_keras()
        return keras.models.load_model(path, compile=False)
    raise EdgesegError(f"{path}: neither an edgeseg run directory nor a .keras / .h5 model file")


def score_model(model, spec: ModelMetadata, samples, label: str = "", progress: bool = False) -> Evaluation:
    """Score a Keras model on full images with a run-time spec (its overlap and normalisation).

    Args:
        model: A fixed-size Keras model (its input is the tile).
        spec: Classes, normalisation, output kind and overlap.
        samples: :class:`edgeseg.data.Sample` list (full images with masks).
        label: What was evaluated, for the result.
        progress: Show a progress bar.

    Returns:
        The evaluation.
    """
    k = int(model.output_shape[-1])
    names = list(spec.classes) if k > 1 else ["background", spec.classes[-1]]
    seg = keras_segmenter(model, spec)
    scored = score(seg, ((s.image, s.mask) for s in samples), names, progress=progress,
                   total=len(samples)).scores
    return Evaluation(label, len(samples), model_tile(model), spec.tile_overlap, scored)


def evaluate(
    model_path, data: str, table: ClassTable | None = None, val_pattern: str | None = None,
    tile: int | None = None, overlap: int | None = None, progress: bool = False,
) -> Evaluation:
    """Evaluate a run or a Keras model file on a dataset folder.

    Args:
        model_path: Run directory or model file.
        data: Dataset folder (``images/`` + ``masks/``).
        table: Class table of ``data``; ``None``: the run's own classes (a run only).
        val_pattern: Evaluate only stems matching these globs; ``None``: a run's validation
            pattern, every image for a model file.
        tile: Tile edge (a run's model is rebuilt at this size); ``None``: the run's tile.
        overlap: Tile overlap in pixels; ``None``: the run's (or the default for a file).
        progress: Show a progress bar.

    Returns:
        The evaluation.

    Raises:
        EdgesegError: Class count mismatch, no images, unreadable model or data.
    """
    path = Path(model_path)
    run = is_run_dir(path)
    model = load_model(path, tile)
    k = int(model.output_shape[-1])
    if run:
        spec = run_spec(path)
        val_pattern = val_pattern or load_config(path).val_pattern
    else:
        if table is None:
            raise EdgesegError(f"{path}: a bare model file needs the class table (--classes)")
        spec = ModelMetadata(classes=list(table.names), mean=[MEAN], std=[STD], output=output_kind(k))
    table = table or spec_table(spec)
    if max(k, 2) != max(table.num_classes, 2) or (k == 1) != (table.num_classes == 1):
        raise EdgesegError(
            f"the model outputs {k} channel(s) but the class table has {table.num_classes} classes"
        )
    if overlap is not None:
        spec = dataclasses.replace(spec, tile_overlap=overlap)
    train, val = load_split(data, table, val_pattern, need_train=False)
    samples = val if val_pattern else train
    if not samples:
        raise EdgesegError(f"no images in {data} match {val_pattern!r}")
    return score_model(model, spec, samples, str(model_path), progress)
