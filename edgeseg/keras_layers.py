"""edgeseg's own Keras layers, defined once tf-keras is imported and registered for loading.

Kept apart from the architectures (:mod:`edgeseg.models.layers`, which builds models with
them): :func:`edgeseg.tf_env.tf_keras` registers these layers whenever edgeseg imports Keras,
and this module imports nothing of edgeseg's that imports Keras.
"""

from __future__ import annotations

UNPOOL_WINDOW = 2
"""Side of the max-pooling windows whose switches ``MaxUnpool2D`` uses (2x2, stride 2)."""

_CUSTOM_LAYERS: dict[str, type] = {}
"""Class name -> class, filled by :func:`register_custom_layers`."""


def register_custom_layers(tf, keras) -> dict[str, type]:
    """Define edgeseg's own Keras layers once and register them for deserialisation.

    :func:`edgeseg.tf_env.tf_keras` calls this right after importing tf-keras, so a saved model
    holding such a layer loads wherever edgeseg gets Keras (``load_model`` of a run's
    ``model.keras``, ``clone_model``, tfmot's ``quantize_apply``) under its registered name
    ``edgeseg>MaxUnpool2D``. The classes are defined at that point, not at import, so that
    importing :mod:`edgeseg.models` does not import TensorFlow.

    Args:
        tf: The ``tensorflow`` module.
        keras: The ``tf_keras`` module.

    Returns:
        Class name -> class.
    """
    if _CUSTOM_LAYERS:
        return _CUSTOM_LAYERS

    class MaxUnpool2D(keras.layers.Layer):
        """Max-unpooling x2: ``[values (N, h, w, C), switches (N, 2h, 2w, C)] -> (N, 2h, 2w, C)``.

        Each value goes to the first position (window order) of the maximum of ``switches``
        in its 2x2 window, channel by channel; the other positions are zero. Weightless; see
        :func:`edgeseg.models.layers.max_unpool` for the operators.
        """

        def build(self, input_shape):
            values, switches = (tf.TensorShape(s) for s in input_shape)
            if values.rank != 4 or switches.rank != 4:
                raise ValueError(f"{self.name}: needs two 4-D inputs, got {values} and {switches}")
            for v, s in ((values[1], switches[1]), (values[2], switches[2])):
                if v is not None and s is not None and s != UNPOOL_WINDOW * v:
                    raise ValueError(f"{self.name}: switches {switches} are not twice the "
                                     f"resolution of values {values}")
            if values[3] is not None and switches[3] is not None and values[3] != switches[3]:
                raise ValueError(f"{self.name}: values have {values[3]} channels, switches {switches[3]}")
            super().build(input_shape)

        def call(self, inputs):
            values, switches = inputs
            # Window positions in order (0,0), (0,1), (1,0), (1,1), each (N, h, w, C).
            positions = tf.split(tf.nn.space_to_depth(switches, UNPOOL_WINDOW), 4, axis=-1)
            before = [None]  # maximum of the positions before each one
            for p in positions[:-1]:
                before.append(p if before[-1] is None else tf.maximum(before[-1], p))
            peak = tf.maximum(before[-1], positions[-1])
            zero = tf.zeros([], values.dtype)
            placed = []
            for p, b in zip(positions, before, strict=True):
                first = tf.greater_equal(p, peak)
                if b is not None:
                    first = tf.logical_and(first, tf.less(b, peak))
                placed.append(tf.where(first, values, zero))
            return tf.nn.depth_to_space(tf.concat(placed, -1), UNPOOL_WINDOW)

        def compute_output_shape(self, input_shape):
            values, switches = (tf.TensorShape(s) for s in input_shape)
            return switches[:3].concatenate(values[3:])

    register = keras.utils.register_keras_serializable(package="edgeseg")
    _CUSTOM_LAYERS["MaxUnpool2D"] = register(MaxUnpool2D)
    return _CUSTOM_LAYERS
