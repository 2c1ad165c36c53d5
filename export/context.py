"""What every exporter gets: the models, the base metadata, calibration images and options.

:class:`ExportContext` also caches the intermediate products that several formats share (the
SavedModel of the float and the QAT model, the int8 TFLite bytes), so a multi-format export
traces and converts each model once. The SavedModel is written from a plain ``tf.Module``
holding the model's variables and one ``tf.function`` with a batch-1 signature, not through
Keras's SavedModel path: the latter traces every layer and takes most of a TFLite conversion's
time (~25 of ~30 s for a tiny model on two cores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.errors import EdgesegError, MissingDependencyError, require
from firmware_bridge.runtime.metadata import ModelMetadata

IO_TYPES = ("int8", "uint8", "float")


DEBUG_ENV = "EDGESEG_DEBUG"
"""Set to 1 (``--debug``) to see TensorFlow's start-up messages."""


@contextlib.contextmanager
def _quiet_stderr(quiet: bool):
    """Send file descriptor 2 to the null device inside the block (C++ start-up lines)."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def tensorflow():
    """The one place TensorFlow is imported: tf-keras (Keras 2) selected, start-up kept quiet.

    ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported (by edgeseg, or
    by tf2onnx or NNCF), otherwise ``tf.keras`` is Keras 3 and tensorflow-model-optimization
    refuses the model. TensorFlow's C++ start-up lines (oneDNN notices, CUDA stub lines, a
    ``cuInit`` error on every machine without a GPU) are dropped unless ``EDGESEG_DEBUG=1``:
    the import and the device probe run with file descriptor 2 sent to the null device, and
    ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3. Python errors still propagate.

    Returns:
        The ``tensorflow`` module.

    Raises:
        MissingDependencyError: Naming the ``train`` extra when TensorFlow is missing, or when
            TensorFlow was imported before with Keras 3 selected.
    """
    if "tensorflow" in sys.modules:
        if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise MissingDependencyError(
                "TensorFlow was imported before edgeseg could select tf-keras: set "
                "TF_USE_LEGACY_KERAS=1 in the environment or import edgeseg first")
        return sys.modules["tensorflow"]
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    quiet = os.environ.get(DEBUG_ENV) != "1"
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_stderr(quiet):
        tf = require("tensorflow", "train")
        tf.config.list_physical_devices()  # the device probe prints its lines now
    return tf


@dataclass
class ExportOptions:
    """Choices that apply to some formats (the format table lists which).

    Attributes:
        stem: File name stem of every artifact (``<stem>_int8.tflite`` ...).
        io_type: Input/output type of the full-integer TFLite models: ``int8``, ``uint8``
            or ``float`` (QUANTIZE / DEQUANTIZE at the edges).
        onnx_opset: ONNX opset for tf2onnx.
        carray_source: Model behind the C array: ``qat`` (the QAT int8 TFLite), ``ptq`` (the
            post-training int8 TFLite) or ``auto`` (QAT when a QAT model is given).
        nncf_subset: Calibration images NNCF uses (at most the ones given).
        float_layers: Keras layers kept in float by the post-training int8 formats
            (``tflite-int8``, ``openvino-int8``): for CPUs and GPUs, not for integer-only NPUs.
    """

    stem: str = "model"
    io_type: str = "int8"
    onnx_opset: int = 17
    carray_source: str = "auto"
    nncf_subset: int = 300
    float_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.io_type not in IO_TYPES:
            raise EdgesegError(f"io_type must be one of {', '.join(IO_TYPES)}, got {self.io_type!r}")
        if self.carray_source not in ("auto", "qat", "ptq"):
            raise EdgesegError(f"carray_source must be auto, qat or ptq, got {self.carray_source!r}")


@dataclass
class ExportContext:
    """The inputs of an export and the products shared between formats.

    Attributes:
        model: The float ``tf_keras`` model, fixed input ``(1?, H, W, C)``.
        meta: Base metadata (classes, colours, normalisation, tiles, scores); each format
            sets ``precision``.
        calibration: Normalised model inputs ``(N, H, W, C)`` float32 from training images
            (representative dataset of the int8 conversions); may be empty for float formats.
        qat_model: The quantization-aware model (same input size), or ``None``.
        options: :class:`ExportOptions`.
        workdir: Scratch folder for SavedModels (the dispatcher creates and removes it).
        notes: Lines a format adds about its artifact (what its runtime runs in integer);
            the dispatcher logs them after the format's own line and empties the list.
    """

    model: Any
    meta: ModelMetadata
    calibration: np.ndarray
    qat_model: Any = None
    options: ExportOptions = field(default_factory=ExportOptions)
    workdir: Path | None = None
    cache: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        h, w = self.model.input_shape[1:3]
        if h is None or w is None:
            raise EdgesegError("export needs a model with a fixed input size (rebuild it at one)")
        return int(h), int(w)

    @property
    def channels(self) -> int:
        """Input bands."""
        return int(self.model.input_shape[-1])

    def metadata(self, precision: str) -> ModelMetadata:
        """The base metadata with this artifact's precision and the model's input size."""
        tile = self.meta.tile_size or self.input_size[0]
        return dataclasses.replace(self.meta, precision=precision, input_size=self.input_size,
                                   channels=self.channels, layout="NHWC", tile_size=tile)

    def keras_model(self, which: str):
        """``"float"`` or ``"qat"`` model.

        Raises:
            EdgesegError: When the QAT model is asked for and none was given.
        """
        if which == "qat":
            if self.qat_model is None:
                raise EdgesegError("this format needs a QAT model: run 'edgeseg qat RUN' first")
            return self.qat_model
        return self.model

    def representative(self, count: int | None = None):
        """A representative-dataset generator over the calibration images (batch 1).

        Raises:
            EdgesegError: When there are no calibration images.
        """
        if len(self.calibration) == 0:
            raise EdgesegError("int8 conversion needs calibration images from the training data "
                               "(--data and --classes, or a run with its data)")
        images = self.calibration[:count] if count else self.calibration

        def gen():
            for image in images:
                yield [image[None].astype(np.float32)]

        return gen

    def saved_model(self, which: str = "float") -> Path:
        """The model as a SavedModel with one batch-1 ``serving_default`` signature (cached).

        Args:
            which: ``"float"`` or ``"qat"``.

        Returns:
            The SavedModel folder inside :attr:`workdir`.
        """
        key = f"saved_model_{which}"
        if key in self.cache:
            return self.cache[key]
        if self.workdir is None:
            raise EdgesegError("ExportContext.workdir is not set (use export.export_formats)")
        tf = tensorflow()
        model = self.keras_model(which)
        h, w = self.input_size
        module = tf.Module()
        module.variables_ = list(model.variables)
        module.serve = tf.function(
            lambda image: {"scores": model(image, training=False)},
            input_signature=[tf.TensorSpec((1, h, w, self.channels), tf.float32, name="image")],
        )
        path = self.workdir / key
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
        self.cache[key] = path
        return path
