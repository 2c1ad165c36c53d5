"""TensorFlow and tf-keras for the training side, through export's one TensorFlow import.

:func:`export.context.tensorflow` selects tf-keras (Keras 2, which tensorflow-model-optimization
needs) before TensorFlow is first imported and keeps its start-up quiet; every module of edgeseg
gets TensorFlow and Keras through :func:`tf_keras`, which also registers edgeseg's own Keras
layers (:func:`edgeseg.keras_layers.register_custom_layers`) so that saved models holding them
load again.
"""

from __future__ import annotations

from edgeseg.keras_layers import register_custom_layers
from export.context import tensorflow
from firmware_bridge.errors import MissingDependencyError


def tf_keras():
    """Import TensorFlow and tf-keras with legacy Keras selected.

    Returns:
        ``(tf, keras)``: the ``tensorflow`` module and the ``tf_keras`` module.

    Raises:
        MissingDependencyError: When TensorFlow or tf-keras is not installed, or TensorFlow
            was already imported with Keras 3 selected.

    """
    tf = tensorflow()
    try:
        import tf_keras as keras
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorFlow with tf-keras is needed for training: pip install 'edgeseg[train]'"
        ) from exc
    register_custom_layers(tf, keras)
    return tf, keras
