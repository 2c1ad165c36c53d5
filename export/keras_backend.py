"""The Keras model behind the device's ``Backend`` interface: one prediction engine for all.

Training's validation, ``edgeseg evaluate``, QAT's validation, the export's parity reference and
the TensorFlow baseline of ``edgeseg bench`` all run the Keras model through a
:class:`~firmware_bridge.runtime.segmenter.Segmenter` whose backend is :class:`KerasBackend`: the same
normalisation, tiles, overlap, blending and threshold as an exported artifact on the device,
only the inference differs. It lives in ``export`` (which may import TensorFlow) so that the
parity check and the training side share it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from export.context import tensorflow
from firmware_bridge.runtime.backends import Backend, TensorSpec
from firmware_bridge.runtime.metadata import ModelMetadata

KERAS_BATCH = 4
"""Tiles per Keras call."""


class KerasBackend(Backend):
    """A fixed-size ``tf_keras`` model (float32 NHWC in and out), compiled once.

    Args:
        model: The Keras model, input ``(None, H, W, C)``.
        label: What reports call it.
    """

    name = "tensorflow"

    def __init__(self, model, label: str = "keras") -> None:
        tf = tensorflow()
        h, w, c = (int(v) for v in model.input_shape[1:4])
        k = int(model.output_shape[-1])
        f32 = np.dtype(np.float32)
        super().__init__(Path(label), TensorSpec("input", (None, h, w, c), f32),
                         TensorSpec("output", (None, h, w, k), f32))
        self.model = model
        self._fn = tf.function(lambda x: model(x, training=False), autograph=False,
                               input_signature=[tf.TensorSpec((None, h, w, c), tf.float32)])

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return np.array(self._fn(x), dtype=np.float32)  # writable: the caller's to change


def keras_segmenter(model, metadata: ModelMetadata, overlap: int | None = None,
                    batch: int = KERAS_BATCH, tta: str | None = None):
    """A :class:`~firmware_bridge.runtime.segmenter.Segmenter` running ``model`` in TensorFlow.

    Args:
        model: A fixed-size Keras model; its input size is the tile.
        metadata: Classes, normalisation, output kind and overlap (a run's
            :func:`edgeseg.spec.run_spec`, or an artifact's); the input size, layout and
            tile come from the model.
        overlap: Tile overlap (``None``: the metadata's).
        batch: Tiles per call.
        tta: Test-time augmentation (``"flips"``; ``None``: none).

    Returns:
        The Segmenter.
    """
    from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

    backend = KerasBackend(model)
    h, w, c = (int(v) for v in model.input_shape[1:4])
    meta = dataclasses.replace(metadata, input_size=(h, w), channels=c, layout="NHWC", tile_size=h)
    return Segmenter.of(backend, meta, SegmenterOptions(overlap=overlap, batch=batch, tta=tta))
