"""Quantization-aware fine-tuning (tensorflow-model-optimization) to a fully int8 graph.

What makes the whole graph int8, for both architectures on MobileNetV2:

* The models are built from layers tfmot's default 8-bit registry quantizes
  (``edgeseg.models.layers``): Conv2D / DepthwiseConv2D + BatchNormalization + ReLU, the ASPP
  image pooling as ``AveragePooling2D`` + nearest ``UpSampling2D`` (no Lambda, no
  ``tf.image.resize``), ``UpSampling2D`` for bilinear / nearest upsampling, ``Concatenate``,
  ``Conv2DTranspose`` with a bias and *no* batch-norm after it (a QAT transposed conv + BN
  stayed float in TFLite), and the softmax ``Activation``. :func:`unsupported_layers` names
  any layer outside that set and :func:`quantize` refuses the model with that list rather
  than leaving a layer float silently.
* The dilated depthwise convolutions of the ASPP are quantized by the converter only when it
  gets a representative dataset and ``TFLITE_BUILTINS_INT8``; the export
  (``export.to_tflite``) does that for QAT models too, then checks the operator list.
* MobileNetV3's hard-sigmoid (``Rescaling``), hard-swish and squeeze-excite (``Multiply``)
  and the ``unpool`` upsampling's ``MaxUnpool2D`` are not in that registry:
  :mod:`edgeseg.quantization.annotate` quantizes their outputs.
* tfmot's graph transforms can permute the inputs of a ``Concatenate`` (DeepLabV3+'s ASPP
  came out ``[pool, 1x1, r6, ...]``): :func:`edgeseg.quantization.annotate.concat_order_fix` keeps
  the order and every concatenation is checked after quantization.
* Batch-norm layers are frozen (``trainable = False``: inference mode with the float model's
  statistics) during fine-tuning: the short QAT run then cannot drag the running statistics
  away from the folded weights (the "one class everywhere" trap of short trainings).

QAT starts from the float model's weights. Saving and loading: :mod:`edgeseg.quantization.store`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable

import numpy as np

from edgeseg.models import build_model
from edgeseg.quantization.annotate import (
    OUTPUT_ONLY,
    annotate_and_quantize,
    check_input_order,
    concat_order_fix,
    needs_annotation,
)
from edgeseg.quantization.ranges import calibrate_ranges
from edgeseg.spec import config_spec
from edgeseg.tf_env import tf_keras
from edgeseg.training.losses import get_loss
from edgeseg.training.stages import cosine_factor
from export.keras_backend import keras_segmenter
from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.evaluate import score

FLOAT_TYPES_NOT_QUANTIZED = ("InputLayer",)


def _tfmot():

    return require("tensorflow_model_optimization", "train")


def _registry():
    return _tfmot().quantization.keras.default_8bit.Default8BitQuantizeRegistry()


def unsupported_layers(model) -> list[str]:
    """``name (Type)`` of every layer QAT cannot quantize.

    Supported: what tfmot's default 8-bit registry quantizes, batch-norm (fused with the
    convolution before it by the scheme's transforms), and the weightless elementwise layers
    that :mod:`edgeseg.quantization.annotate` annotates (``Multiply``, ``Rescaling``,
    ``MaxUnpool2D``). Input layers are skipped.
    """
    _, keras = tf_keras()
    registry = _registry()
    bad = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in (*FLOAT_TYPES_NOT_QUANTIZED, *OUTPUT_ONLY):
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        if not registry.supports(layer):
            bad.append(f"{layer.name} ({kind})")
    return bad


def quantize(model):
    """Wrap a float model for QAT (batch-norm frozen), keeping its weights.

    Args:
        model: A ``tf_keras`` model from :func:`edgeseg.models.build_model`; left unchanged.

    Returns:
        The quantization-aware model (layers prefixed ``quant_``).

    Raises:
        EdgesegError: When a layer cannot be quantized (listed), e.g. a ``Lambda``.
    """
    _, keras = tf_keras()
    tfmot = _tfmot()
    bad = unsupported_layers(model)
    if bad:
        raise EdgesegError(
            f"QAT cannot quantize {len(bad)} layer(s) of {model.name}: {', '.join(bad[:6])}"
            f"{' ...' if len(bad) > 6 else ''}; build the model from quantizable layers (no "
            "Lambda, no tf ops), or export it with post-training int8 (tflite-int8)"
        )
    frozen = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            layer.trainable = False
            frozen.append(layer)
    try:
        registry = _registry()
        with concat_order_fix():
            if needs_annotation(model, registry):
                qat = annotate_and_quantize(model, registry)
            else:
                qat = tfmot.quantization.keras.quantize_model(model)
        check_input_order(model, qat)
        return qat
    finally:
        for layer in frozen:
            layer.trainable = True


def qat_finetune(
    model, train_data: Callable[[int], Iterable], val_data: Callable | None = None, epochs: int = 2,
    *, loss: Callable | None = None, lr: float = 1e-4, steps_per_epoch: int | None = None,
    on_epoch_end: Callable[[dict], None] | None = None, range_batches: int = 4,
):
    """Fine-tune a float model with fake quantization; return the best QAT model.

    Args:
        model: The trained float model (training input size); not modified.
        train_data: ``epoch -> iterable of (images, masks)`` batches: normalised float32
            ``NxHxWx3`` images and ``NxHxW`` class masks (255 = ignore).
        val_data: ``qat_model -> mIoU`` on the run's validation split (see
            :func:`validator`), or ``None`` to keep the last epoch.
        epochs: Passes over ``train_data``.
        loss: ``loss(y_true, y_pred)``; default: cross-entropy ignoring 255.
        lr: Adam learning rate at the start (cosine decay to 2 % over the run).
        steps_per_epoch: Batches per epoch, for the decay (``None``: counted in epoch 1).
        on_epoch_end: Called with ``{"epoch", "loss", "val_miou", "lr"}`` after each epoch,
            and for epoch 0 (ranges calibrated, not yet fine-tuned) when validating.
        range_batches: Batches of ``train_data(0)`` on which the float model's tensors set the
            activation ranges before training (:func:`edgeseg.quantization.ranges.calibrate_ranges`);
            0 keeps tfmot's [-6, 6].

    Returns:
        The QAT model with the weights of the epoch with the best validation mIoU.
    """
    tf, keras = tf_keras()
    if epochs < 1:
        raise EdgesegError(f"QAT needs at least one epoch, got {epochs}")
    qat = quantize(model)
    loss = loss or get_loss("ce", int(model.output_shape[-1]))
    opt = keras.optimizers.Adam(lr)
    variables = qat.trainable_weights

    @tf.function
    def step(images, masks):
        with tf.GradientTape() as tape:
            value = loss(masks, qat(images, training=True))
        opt.apply_gradients(zip(tape.gradient(value, variables), variables, strict=True))
        return value

    if range_batches:
        batches = [images for images, _ in itertools.islice(train_data(0), range_batches)]
        calibrate_ranges(qat, model, batches)
    best, best_weights, done = -math.inf, None, 0
    if val_data is not None:
        best, best_weights = float(val_data(qat)), qat.get_weights()
        if on_epoch_end:
            on_epoch_end({"epoch": 0, "loss": None, "val_miou": round(best, 6), "lr": 0.0})
    for epoch in range(epochs):
        losses = []
        for images, masks in train_data(epoch):
            if steps_per_epoch:
                opt.learning_rate = lr * cosine_factor(done / (epochs * steps_per_epoch))
            losses.append(float(step(images, masks)))
            if not math.isfinite(losses[-1]):
                raise EdgesegError(f"QAT diverged (loss {losses[-1]} at epoch {epoch + 1}): "
                                   "lower the learning rate (--lr)")
            done += 1
        steps_per_epoch = steps_per_epoch or len(losses)
        miou = float(val_data(qat)) if val_data is not None else float(epoch)
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 6) if losses else None,
               "val_miou": round(miou, 6) if val_data is not None else None,
               "lr": float(opt.learning_rate.numpy())}
        if miou > best:
            best, best_weights = miou, qat.get_weights()
        if on_epoch_end:
            on_epoch_end(row)
    qat.set_weights(best_weights)
    return qat


def build_qat(config, input_size: tuple[int, int]):
    """An untrained QAT model of a run's architecture at ``input_size``."""
    model = build_model(config.arch, config.backbone, config.num_classes,
                        input_size=tuple(input_size), upsampling=config.upsampling)
    return quantize(model)


def transfer_qat(src, dst) -> None:
    """Copy QAT weights layer by layer between two builds of one architecture (any size).

    Raises:
        EdgesegError: When the layers or weight shapes differ.
    """
    if len(src.layers) != len(dst.layers):
        raise EdgesegError(f"QAT models differ: {len(src.layers)} vs {len(dst.layers)} layers")
    for a, b in zip(src.layers, dst.layers, strict=True):
        wa, wb = a.get_weights(), b.get_weights()
        if [w.shape for w in wa] != [w.shape for w in wb]:
            raise EdgesegError(f"QAT layer {a.name} does not fit {b.name}")
        if wa:
            b.set_weights(wa)


def validator(config, samples, tile: int, overlap: int):
    """``qat_model -> mIoU``: tiled prediction of full validation images at ``tile``.

    A QAT model of another input size has its weights copied into one built at the tile
    size (built once, at the first call), so the score is comparable with the float model's
    (same Segmenter, tiles, overlap and scoring loop). Returns ``None`` without samples.
    """
    if not samples:
        return None
    cache: dict = {}
    meta = dataclasses.replace(config_spec(config), tile_overlap=overlap)
    names = config.class_names if config.num_classes > 1 else ["0", "1"]

    def miou(qat) -> float:
        if tuple(qat.input_shape[1:3]) == (tile, tile):
            model = qat
        else:
            model = cache.get("model") or cache.setdefault("model", build_qat(config, (tile, tile)))
            transfer_qat(qat, model)
        if cache.get("for") is not model:
            cache.update({"for": model, "segmenter": keras_segmenter(model, meta)})
        return score(cache["segmenter"], ((s.image, s.mask) for s in samples), names).scores.miou

    return miou
