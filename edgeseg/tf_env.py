"""The one place that imports TensorFlow, with tf-keras (Keras 2) selected for tfmot QAT.

``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported, otherwise
``tf.keras`` is Keras 3 and tensorflow-model-optimization refuses the model. Every module
of edgeseg and export gets TensorFlow and Keras through :func:`tf_keras`.
"""

from __future__ import annotations

import os
import sys

from firmware_bridge.errors import MissingDependencyError


def tf_keras():
    """Import TensorFlow and tf-keras with legacy Keras selected.

    Returns:
        ``(tf, keras)``: the ``tensorflow`` module and the ``tf_keras`` module.

    Raises:
        MissingDependencyError: When TensorFlow or tf-keras is not installed, or TensorFlow
            was already imported with Keras 3 selected.

    """
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    elif os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise MissingDependencyError(
            "TensorFlow was imported before edgeseg could select tf-keras: set "
            "TF_USE_LEGACY_KERAS=1 in the environment or import edgeseg first"
        )
    try:
        import tensorflow as tf
        import tf_keras as keras
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorFlow with tf-keras is needed for training: pip install 'edgeseg[train]'"
        ) from exc
    return tf, keras
