"""Tiled prediction of full images with a Keras model, scored by the device's metric core.

The tiles, blending windows and score accumulation are those of ``firmware_bridge.tiling``,
and the scores come from ``firmware_bridge.metrics``: a validation mIoU during training means
the same as ``edgeseg-run validate`` on the device (up to the exported model's precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgeseg.data.dataset import Sample
from edgeseg.data.pipeline import normalise
from firmware_bridge import tiling
from firmware_bridge.errors import EdgesegError
from firmware_bridge.metrics import ConfusionMatrix, SegScores
from firmware_bridge.progress import progress as progress_bar

Predictor = Callable[[np.ndarray], np.ndarray]
"""Normalised ``NxTxTx3`` float32 batch -> ``NxTxTxK`` scores."""

DEFAULT_OVERLAP = 32


def keras_predictor(model) -> Predictor:
    """Wrap a Keras model as a compiled batch predictor (inference mode).

    Args:
        model: A ``tf_keras`` model with a fixed ``(H, W, 3)`` input.

    Returns:
        A function from a NumPy batch to NumPy scores.
    """
    from edgeseg.tf_env import tf_keras

    tf, _ = tf_keras()
    h, w = model.input_shape[1:3]
    fn = tf.function(
        lambda x: model(x, training=False), autograph=False,
        input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32)],
    )
    return lambda batch: fn(batch).numpy()


def model_tile(model) -> int:
    """The square tile edge a fixed-size Keras model takes.

    Raises:
        EdgesegError: When the input is not square or not fixed.
    """
    h, w = model.input_shape[1:3]
    if h is None or w is None or h != w:
        raise EdgesegError(f"tiled prediction needs a fixed square input, the model takes {h}x{w}")
    return int(h)


def predict_scores(
    predict: Predictor, image: np.ndarray, tile: int, overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 4,
) -> np.ndarray:
    """Blended per-class scores of a full image (tiles, Hann-window blending).

    Args:
        predict: Batch predictor (:func:`keras_predictor`).
        image: ``HxWx3`` uint8 image of any size.
        tile: Tile edge (the model's input size).
        overlap: Overlap between neighbouring tiles in pixels.
        batch_size: Tiles per model call.

    Returns:
        ``HxWxK`` float32 scores.
    """
    height, width = image.shape[:2]
    padded = tiling.pad_to_tile(image, tile)
    ph, pw = padded.shape[:2]
    boxes = tiling.tile_boxes(ph, pw, tile, overlap)
    acc = wsum = None
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        batch = np.stack([normalise(padded[b.y0:b.y1, b.x0:b.x1]) for b in chunk])
        scores = predict(batch)
        if acc is None:
            acc = np.zeros((ph, pw, scores.shape[-1]), np.float32)
            wsum = np.zeros((ph, pw), np.float32)
        for box, s in zip(chunk, scores, strict=True):
            tiling.accumulate(acc, wsum, s, tiling.tile_window(box, ph, pw), box)
    return tiling.normalise(acc, wsum)[:height, :width]


def scores_to_mask(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class map from scores: argmax over K channels, or ``score > threshold`` for one channel."""
    if scores.shape[-1] == 1:
        return (scores[..., 0] > threshold).astype(np.uint8)
    return np.argmax(scores, axis=-1).astype(np.uint8)


def evaluate_samples(
    predict: Predictor, samples: Sequence[Sample], num_classes: int, tile: int,
    overlap: int = DEFAULT_OVERLAP, class_names: list[str] | None = None, progress: bool = False,
) -> SegScores:
    """Score a model on full images with the device's metric core.

    Args:
        predict: Batch predictor.
        samples: Images with ground-truth masks.
        num_classes: ``K`` of the masks (2 for a one-channel sigmoid model).
        tile: Tile edge.
        overlap: Tile overlap.
        class_names: Names for the score table.
        progress: Show a progress bar.

    Returns:
        Scores accumulated over all samples.

    Raises:
        EdgesegError: With no samples.
    """
    if not samples:
        raise EdgesegError("no validation images: check --val-pattern and the data folder")
    cm = ConfusionMatrix(num_classes)
    for sample in progress_bar(samples, len(samples), "validate", progress, "img"):
        mask = scores_to_mask(predict_scores(predict, sample.image, tile, overlap))
        cm.update(sample.mask, mask)
    return cm.scores(class_names)
