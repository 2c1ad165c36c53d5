"""Segmentation losses that honour the ignore label: soft Dice, weighted cross-entropy, focal.

Conventions for every loss ``loss(y_true, y_pred) -> scalar``:

- ``y_true``: class indices ``(N, H, W)`` or ``(N, H, W, 1)`` (any numeric dtype); pixels equal
  to :data:`IGNORE_INDEX` (255) count for nothing: not in any sum, not in any normaliser.
- ``y_pred``: probabilities, softmax ``(N, H, W, K)`` or one sigmoid channel ``(N, H, W, 1)``
  (also ``(N, H, W)``: Keras squeezes a 1-channel prediction against a 3-D target). A sigmoid
  output is treated as two classes ``[1 - p, p]`` with targets 0/1; its Dice is the
  foreground Dice.
- Class weights (from the data layer: inverse or median frequency) have one value per class
  (two, background and foreground, for a sigmoid output). They weight the cross-entropy and
  focal terms per pixel (normalised by the sum of the weights of the counted pixels, as
  PyTorch's ``CrossEntropyLoss(weight=...)``) and the mean of the per-class Dice.
- Soft Dice is computed over the whole batch per class, ``2 * sum(p * g) / (sum(p) + sum(g))``;
  classes absent from the batch's (valid) targets are left out of the mean, as in
  segmentation_models.pytorch, so that an empty class does not dominate.

:func:`get_loss` parses sums such as ``"ce+dice"`` or ``"0.5*focal+dice"``.
"""

from __future__ import annotations

import re

from edgeseg.tf_env import tf_keras
from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError

EPS = 1e-7


def _prepare(y_true, y_pred):
    """Return ``(onehot NxHxWxK float, probs NxHxWxK float, valid NxHxW float, K)``."""
    tf, _ = tf_keras()
    y_pred = tf.cast(y_pred, tf.float32)
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 4:
        y_true = tf.squeeze(y_true, -1)
    if y_pred.shape.rank == 3:
        y_pred = y_pred[..., None]
    labels = tf.cast(tf.round(tf.cast(y_true, tf.float32)), tf.int32)
    valid = tf.not_equal(labels, IGNORE_INDEX)
    labels = tf.where(valid, labels, 0)
    if y_pred.shape[-1] == 1:
        y_pred = tf.concat([1.0 - y_pred, y_pred], axis=-1)
    k = int(y_pred.shape[-1])
    onehot = tf.one_hot(labels, k, dtype=tf.float32)
    return onehot, y_pred, tf.cast(valid, tf.float32), k


def _weights(class_weights, k: int):

    tf, _ = tf_keras()
    if class_weights is None:
        return tf.ones([k], tf.float32)
    return tf.constant([float(w) for w in class_weights], tf.float32)


def soft_dice_per_class(y_true, y_pred):
    """Per-class soft Dice over the batch, ignoring label 255.

    Args:
        y_true: Class indices (see module docstring).
        y_pred: Probabilities.

    Returns:
        ``(dice (K,), present (K,))``: Dice of each class (of ``[1 - p, p]`` for a sigmoid
        output) and 1.0 where the class occurs in the valid targets.
    """
    tf, _ = tf_keras()
    onehot, probs, valid, _ = _prepare(y_true, y_pred)
    mask = valid[..., None]
    axes = [0, 1, 2]
    intersection = tf.reduce_sum(probs * onehot * mask, axes)
    cardinality = tf.reduce_sum(probs * mask, axes) + tf.reduce_sum(onehot * mask, axes)
    dice = 2.0 * intersection / tf.maximum(cardinality, EPS)
    present = tf.cast(tf.reduce_sum(onehot * mask, axes) > 0, tf.float32)
    return dice, present


def dice_loss(class_weights=None):
    """Return ``1 - weighted mean of per-class soft Dice`` over the classes present.

    For a sigmoid output only the foreground Dice counts.
    """
    tf, _ = tf_keras()

    def loss(y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        dice, present = soft_dice_per_class(y_true, y_pred)
        k = int(dice.shape[0])
        weights = _weights(class_weights, k) * present
        if _is_sigmoid(y_pred):
            weights = weights * tf.constant([0.0, 1.0])
        total = tf.reduce_sum(weights)
        return tf.math.divide_no_nan(tf.reduce_sum(weights * (1.0 - dice)), total)

    return loss


def _is_sigmoid(y_pred) -> bool:
    return y_pred.shape.rank == 3 or y_pred.shape[-1] == 1


def focal_loss(class_weights=None, gamma: float = 2.0):
    """Return the focal loss ``-w[y] (1 - p_y)^gamma log p_y``, a weighted mean over pixels.

    With ``gamma=0`` it equals :func:`cross_entropy_loss`.
    """
    tf, _ = tf_keras()

    def loss(y_true, y_pred):
        onehot, probs, valid, k = _prepare(y_true, y_pred)
        p_true = tf.reduce_sum(probs * onehot, -1)
        pixel_w = tf.reduce_sum(onehot * _weights(class_weights, k), -1) * valid
        term = -tf.math.log(tf.clip_by_value(p_true, EPS, 1.0))
        if gamma:
            term = term * tf.pow(1.0 - p_true, gamma)
        return tf.math.divide_no_nan(tf.reduce_sum(pixel_w * term), tf.reduce_sum(pixel_w))

    return loss


def cross_entropy_loss(class_weights=None):
    """Return the (class-weighted) cross-entropy ``-w[y] log p_y``, a weighted mean."""
    return focal_loss(class_weights, gamma=0.0)


LOSSES = {
    "ce": lambda weights, gamma: cross_entropy_loss(weights),
    "dice": lambda weights, gamma: dice_loss(weights),
    "focal": lambda weights, gamma: focal_loss(weights, gamma),
}
"""Loss name -> builder ``(class_weights, focal_gamma) -> loss(y_true, y_pred)``."""

_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z_]+)\s*$")


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """Parse ``"0.5*focal+dice"`` into ``[(0.5, "focal"), (1.0, "dice")]``.

    Raises:
        EdgesegError: For a malformed term or an unknown loss name (the message lists them).
    """
    terms = []
    for part in str(spec).lower().split("+"):
        match = _TERM.match(part)
        if not match:
            raise EdgesegError(
                f"cannot parse loss term {part!r} in {spec!r}; write e.g. 'ce+dice' or "
                "'0.5*focal+dice'"
            )
        if match.group(2) not in LOSSES:
            raise EdgesegError(
                f"unknown loss {match.group(2)!r}; valid losses: {', '.join(sorted(LOSSES))}"
            )
        terms.append((float(match.group(1) or 1.0), match.group(2)))
    return terms


def get_loss(spec: str, num_classes: int, class_weights=None, focal_gamma: float = 2.0):
    """Build a loss from a spec such as ``"ce+dice"`` or ``"0.5*focal+dice"``.

    Args:
        spec: ``+``-separated terms, each ``[weight*]name`` with a name from :data:`LOSSES`.
        num_classes: Classes of the model (1 for a sigmoid output).
        class_weights: ``None`` or one weight per class (2 for ``num_classes == 1``).
        focal_gamma: Focusing parameter of the focal term.

    Returns:
        ``loss(y_true, y_pred) -> scalar``; its ``spec`` attribute is the normalised spec
        (``"0.5*focal+dice"``), its ``__name__`` the same as an identifier.

    Raises:
        EdgesegError: Malformed spec, unknown name, or wrong number of class weights.
    """
    terms = parse_loss_spec(spec)
    if class_weights is not None:
        class_weights = [float(w) for w in class_weights]
        expected = max(int(num_classes), 2)
        if len(class_weights) != expected:
            raise EdgesegError(
                f"got {len(class_weights)} class weights for {num_classes} classes; "
                f"expected {expected}"
            )
    parts = [(w, LOSSES[name](class_weights, focal_gamma)) for w, name in terms]

    def loss(y_true, y_pred):
        total = 0.0
        for weight, fn in parts:
            total = total + weight * fn(y_true, y_pred)
        return total

    loss.spec = "+".join(name if w == 1.0 else f"{w:g}*{name}" for w, name in terms)
    loss.__name__ = re.sub(r"[^0-9a-zA-Z_]", "_", loss.spec)
    return loss
