"""The mechanics of two-stage transfer learning: freezing, per-part optimizers, batch-norm.

* Stage 1: every encoder layer has ``trainable = False``. In tf-keras a non-trainable
  ``BatchNormalization`` runs in inference mode even under ``training=True``, so the
  pretrained statistics stay as they are; the decoder and head learn.
* Stage 2: the encoder from a named block on (or all of it) becomes trainable. Its
  batch-norm layers stay frozen when the encoder was pretrained (small batches of crops
  would otherwise overwrite ImageNet statistics).
* Per-part learning rates are real: two optimizers, one over the encoder's variables and one
  over the decoder's and head's, applied in one custom train step.
* Batch-norm layers that train (the decoder's; all of them from scratch) keep a running
  average that lags behind the weights after a short training, and the model can then
  predict one class at inference. :func:`recalibrate_batchnorm` re-estimates those
  statistics as the exact mean over a few batches before every validation.
"""

from __future__ import annotations

import math
import re

from edgeseg.models import decoder_layers, encoder_layers, head_layers
from edgeseg.models.backbones import get_backbone_spec
from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError


def top_block(backbone: str) -> str:
    """The first block of the encoder's top (stride 16 -> 32): ``block_13`` for MobileNetV2.

    It is the block holding the stride-16 skip feature of the backbone table.
    """
    ref = get_backbone_spec(backbone)["features"][16].split(":")[0].split("/")[0]
    match = re.match(r"^(block_\d+|expanded_conv(?:_\d+)?)", ref)
    return match.group(1) if match else ref


def unfreeze_start(layers: list, block: str) -> int:
    """Index of the first encoder layer to train in stage 2.

    Args:
        layers: Encoder layers in model order.
        block: ``"all"`` or a block name such as ``"block_13"`` (MobileNetV2) or
            ``"expanded_conv_6"`` (MobileNetV3): the first layer whose name is the block
            name or starts with it followed by ``_`` or ``/``.

    Returns:
        The index in ``layers``.

    Raises:
        EdgesegError: When no encoder layer belongs to the block.
    """
    if block == "all":
        return 0
    for i, layer in enumerate(layers):
        if layer.name == block or layer.name.startswith((block + "_", block + "/")):
            return i
    examples = ", ".join(sorted({layer.name.rsplit("_", 1)[0] for layer in layers[-40:]})[:6])
    raise EdgesegError(
        f"no encoder block named {block!r}; use 'all', 'top' or a block such as {examples}"
    )


def set_stage(model, stage: int, unfreeze: str = "all", freeze_encoder_bn: bool = True):
    """Set ``trainable`` on every layer for a stage; return ``(encoder_vars, head_vars)``.

    Args:
        model: A model from :func:`edgeseg.models.build_model`.
        stage: 1 (encoder frozen) or 2 (encoder trainable from ``unfreeze``).
        unfreeze: ``"all"`` or a block name (:func:`unfreeze_start`).
        freeze_encoder_bn: Keep the encoder's batch-norm layers frozen in stage 2.

    Returns:
        Trainable variables of the encoder, and of the decoder plus head.
    """
    _, keras = tf_keras()
    enc = encoder_layers(model)
    start = len(enc) if stage == 1 else unfreeze_start(enc, unfreeze)
    for i, layer in enumerate(enc):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= start and not (freeze_encoder_bn and is_bn)
    rest = decoder_layers(model) + head_layers(model)
    for layer in rest:
        layer.trainable = True
    enc_vars = [v for layer in enc for v in layer.trainable_weights]
    head_vars = [v for layer in rest for v in layer.trainable_weights]
    if len(enc_vars) + len(head_vars) != len(model.trainable_weights):
        raise EdgesegError("model has trainable layers outside encoder/decoder/head (naming)")
    return enc_vars, head_vars


def make_optimizers(enc_vars, head_vars, lr_head: float, encoder_lr_factor: float):
    """Adam for the decoder+head at ``lr_head``; Adam for the encoder at ``factor * lr_head``.

    Returns:
        ``(encoder_optimizer or None when the encoder is frozen, head_optimizer)``, built.
    """
    _, keras = tf_keras()
    head_opt = keras.optimizers.Adam(lr_head)
    head_opt.build(head_vars)
    enc_opt = None
    if enc_vars:
        enc_opt = keras.optimizers.Adam(lr_head * encoder_lr_factor)
        enc_opt.build(enc_vars)
    return enc_opt, head_opt


def make_train_step(model, loss_fn, enc_vars, head_vars, enc_opt, head_opt, strategy=None,
                    average=None):
    """A compiled step: one forward/backward pass, each part updated by its own optimizer.

    Under a ``tf.distribute`` strategy each replica's loss is divided by the replica count and
    the optimizers sum the gradients over the replicas: the step is the step of one process on
    the global batch.

    Args:
        model: The training model (variables created in the strategy's scope).
        loss_fn: ``loss(y_true, y_pred)``, a mean over the replica's batch.
        enc_vars: Encoder variables trained by ``enc_opt`` (may be empty).
        head_vars: Decoder and head variables trained by ``head_opt``.
        enc_opt: Encoder optimizer, or ``None`` when ``enc_vars`` is empty.
        head_opt: Decoder and head optimizer.
        strategy: The strategy the batches are distributed by (``None``: no strategy).
        average: A :class:`edgeseg.training.averaging.WeightAverage` updated after each step
            (``None``: none).

    Returns:
        ``step(images, masks) -> loss`` (a ``tf.function``; the loss of the global batch).
    """
    tf, _ = tf_keras()
    n = len(enc_vars)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1

    def replica_step(images, masks):
        with tf.GradientTape() as tape:
            loss = loss_fn(masks, model(images, training=True)) / replicas
        grads = tape.gradient(loss, enc_vars + head_vars)
        if n:
            enc_opt.apply_gradients(zip(grads[:n], enc_vars, strict=True))
        head_opt.apply_gradients(zip(grads[n:], head_vars, strict=True))
        return loss

    if strategy is None:
        step = tf.function(replica_step, autograph=False)
    else:
        @tf.function(autograph=False)
        def step(images, masks):
            losses = strategy.run(replica_step, args=(images, masks))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    if average is None:
        return step
    # a function of its own: inside the step's graph the same update made a step ~25 % slower
    update = tf.function(average.update, autograph=False)

    def step_and_average(images, masks):
        loss = step(images, masks)
        update()  # every replica holds the same weights after the step
        return loss

    return step_and_average


def cosine_factor(progress: float, floor: float = 0.02) -> float:
    """Cosine decay from 1 at ``progress = 0`` to ``floor`` at ``progress >= 1``."""
    p = min(max(progress, 0.0), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def recalibrate_batchnorm(model, batches) -> int:
    """Set the running statistics of training-mode batch-norm layers to their batch mean.

    Every ``BatchNormalization`` that is trainable (so runs in training mode) gets, as moving
    mean and variance, the average over ``batches`` of its batch statistics (momentum
    ``i / (i + 1)`` on batch ``i``). Frozen layers are untouched. Nothing else changes.

    Args:
        model: The training model.
        batches: Iterable of normalised image batches.

    Returns:
        The number of batches used.
    """
    _, keras = tf_keras()
    bns = [layer for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    saved = [bn.momentum for bn in bns]
    used = 0
    try:
        for i, images in enumerate(batches):
            for bn in bns:
                bn.momentum = i / (i + 1)
            model(images, training=True)
            used += 1
    finally:
        for bn, momentum in zip(bns, saved, strict=True):
            bn.momentum = momentum
    return used
