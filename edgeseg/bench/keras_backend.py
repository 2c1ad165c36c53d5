"""The Keras model in TensorFlow as the baseline of every speed-up.

The baseline must do exactly what the exported artifacts do except the inference itself: the
same normalisation, tiles, overlap, blending and GeoTIFF streaming. So a
:class:`~firmware_bridge.runtime.segmenter.Segmenter` is opened on an exported artifact of the same
model and size (its metadata gives normalisation, classes and tiling) and its backend is
replaced by :class:`export.keras_backend.KerasBackend`. Only the backend call differs between
the two measurements.
"""

from __future__ import annotations

from pathlib import Path

from edgeseg.tf_env import tf_keras
from export.keras_backend import KerasBackend
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.segmenter import Segmenter


def keras_segmenter_like(model, template: Path, options):
    """A Segmenter that runs ``model`` in TensorFlow with the pre/post-processing of ``template``.

    Args:
        model: The Keras model at the tile size to measure.
        template: An exported artifact of the same model (its metadata is used).
        options: :class:`~firmware_bridge.runtime.segmenter.SegmenterOptions` (tile for dynamic
            templates, overlap, batch).

    Returns:
        The Segmenter, with :class:`KerasBackend` as its backend.

    Raises:
        EdgesegError: When the template's tile differs from the model's input size.
    """
    seg = Segmenter(template, options=options)
    size = tuple(int(v) for v in model.input_shape[1:3])
    if seg.tile != size:
        raise EdgesegError(f"{template}: tiles of {seg.tile} but the Keras model takes {size}")

    seg.backend = KerasBackend(model)
    return seg


def set_tensorflow_threads(threads: int) -> dict:
    """Limit TensorFlow to ``threads`` intra-op threads and one inter-op thread.

    One inter-op thread matches the other runtimes, which run a model's operators one after
    the other, each on ``threads`` threads. Must happen before TensorFlow runs anything.

    Returns:
        ``{"intra_op": n, "inter_op": m, "applied": bool}`` as TensorFlow reports them
        (``applied`` is False when TensorFlow had already started and kept its settings).
    """
    tf, _ = tf_keras()
    applied = True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        applied = False
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(), "applied": applied}
