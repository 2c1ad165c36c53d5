"""Pseudo-labels from a model's probabilities: confident pixels, class-balanced (CBST).

A pixel of an unlabelled image gets the class the model predicts there when the model is
confident enough; every other pixel is ignore (255, which the losses skip). "Confident enough"
is decided per class, as in class-balanced self-training (Zou et al., ECCV 2018): of the pixels
predicted as class ``c`` over all the images, a pixel is kept when its confidence (the
predicted class's probability) reaches

    ``t_c = min(threshold, q_c)``

where ``q_c`` is the confidence of the ``ceil(portion * n_c)``-th most confident of the
``n_c`` pixels predicted as ``c``. So every pixel above the global ``threshold`` is kept, and
every class keeps at least its top ``portion`` of pixels, even when the model is less sure of a
rare class than of a common one: a global threshold alone would leave a rare class almost no
pseudo-labels, and self-training would then teach the model to predict it even less.

Pure NumPy; the model's probabilities come from :mod:`edgeseg.adaptation.labelling`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError

QUANTILE_SAMPLE = 4_000_000
"""At most this many confidences per class enter a class's quantile (an even stride beyond)."""


@dataclass
class PseudoLabels:
    """Pseudo-label masks and how they were chosen.

    Attributes:
        masks: One ``HxW`` uint8 mask per image: the predicted class where kept, 255 elsewhere.
        thresholds: Per class, the confidence a pixel predicted as that class needs.
        predicted: Per class, the pixels predicted as that class (pixels with data).
        kept: Per class, the pixels kept.
    """

    masks: list[np.ndarray]
    thresholds: np.ndarray
    predicted: np.ndarray
    kept: np.ndarray

    @property
    def kept_share(self) -> float:
        """Share of the pixels with data that hold a pseudo-label."""
        return float(self.kept.sum() / max(int(self.predicted.sum()), 1))

    def class_shares(self) -> np.ndarray:
        """Per class, the share of its predicted pixels that were kept (0 when none predicted)."""
        return self.kept / np.maximum(self.predicted, 1)

    def to_dict(self, names: Sequence[str]) -> dict:
        """JSON-ready: the kept share, and per class the threshold, predicted and kept pixels."""
        return {
            "kept_share": round(self.kept_share, 6),
            "classes": {
                name: {"threshold": round(float(t), 6), "predicted": int(p), "kept": int(k)}
                for name, t, p, k in zip(names, self.thresholds, self.predicted, self.kept,
                                         strict=True)
            },
        }


def confidence(probs: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The predicted class of every pixel and its probability.

    Args:
        probs: ``HxWxK`` probabilities (``K = 1``: a sigmoid's probability of class 1).
        mask: The predicted ``HxW`` mask, 255 where the image has no data (``None``: the
            argmax, or the 0.5 threshold of a sigmoid).

    Returns:
        ``(labels HxW uint8, confidences HxW float32)``; labels are 255 and confidences -1
        where ``mask`` is 255.

    Raises:
        EdgesegError: For probabilities that are not ``HxWxK``, or a mask of another size.
    """
    probs = np.asarray(probs, np.float32)
    if probs.ndim != 3:
        raise EdgesegError(f"probabilities must be HxWxK, got shape {probs.shape}")
    if probs.shape[-1] == 1:
        p = probs[..., 0]
        labels = (p >= 0.5).astype(np.uint8) if mask is None else mask.astype(np.uint8)
        conf = np.where(labels == 1, p, 1.0 - p).astype(np.float32)
    else:
        labels = np.argmax(probs, axis=-1).astype(np.uint8) if mask is None else mask.astype(np.uint8)
        conf = np.take_along_axis(probs, np.minimum(labels, probs.shape[-1] - 1)[..., None],
                                  axis=-1)[..., 0]
    if labels.shape != probs.shape[:2]:
        raise EdgesegError(f"the mask is {labels.shape} but the probabilities {probs.shape[:2]}")
    conf = np.where(labels == IGNORE_INDEX, np.float32(-1.0), conf).astype(np.float32)
    return labels, conf


def _check(threshold: float, portion: float) -> None:
    if not 0 <= threshold <= 1:
        raise EdgesegError(f"the confidence threshold is a probability in [0, 1], got {threshold}")
    if not 0 <= portion <= 1:
        raise EdgesegError(f"the class portion is a share in [0, 1], got {portion}")


def class_thresholds(labels: Sequence[np.ndarray], confidences: Sequence[np.ndarray],
                     num_classes: int, threshold: float, portion: float) -> np.ndarray:
    """Per class ``min(threshold, confidence of the class's top-portion pixel)``.

    Args:
        labels: Predicted classes per image (255: no data).
        confidences: Their confidences.
        num_classes: ``K``.
        threshold: Global confidence threshold: a pixel above it is always kept.
        portion: Share of each class's predicted pixels kept whatever their confidence
            (its most confident ones; 0: the global threshold alone).

    Returns:
        ``K`` thresholds (``threshold`` for a class predicted nowhere).

    Raises:
        EdgesegError: For a threshold or portion outside ``[0, 1]``.
    """
    _check(threshold, portion)
    total = sum(int(c.size) for c in confidences)
    stride = max(1, math.ceil(total / QUANTILE_SAMPLE))
    out = np.full(num_classes, threshold, np.float64)
    for c in range(num_classes):
        values = np.concatenate([conf.ravel()[::stride][lab.ravel()[::stride] == c]
                                 for lab, conf in zip(labels, confidences, strict=True)])
        n = values.size
        k = math.ceil(portion * n - 1e-9)
        if n and k:
            out[c] = min(threshold, float(np.partition(values, n - k)[n - k]))
    return out


def select(labels: Sequence[np.ndarray], confidences: Sequence[np.ndarray],
           thresholds: np.ndarray) -> PseudoLabels:
    """Keep the pixels whose confidence reaches their class's threshold; 255 elsewhere.

    Args:
        labels: Predicted classes per image (255: no data).
        confidences: Their confidences.
        thresholds: Per class, from :func:`class_thresholds`.

    Returns:
        The masks and per-class counts.
    """
    k = len(thresholds)
    predicted, kept = np.zeros(k, np.int64), np.zeros(k, np.int64)
    masks = []
    table = np.append(np.asarray(thresholds, np.float32), np.float32(np.inf))
    for lab, conf in zip(labels, confidences, strict=True):
        index = np.where(lab < k, lab, k)
        keep = conf >= table[index]
        masks.append(np.where(keep, lab, IGNORE_INDEX).astype(np.uint8))
        predicted += np.bincount(lab[lab < k].ravel(), minlength=k)[:k]
        kept += np.bincount(lab[keep].ravel(), minlength=k)[:k]
    return PseudoLabels(masks, np.asarray(thresholds, np.float64), predicted, kept)


def pseudo_labels(probabilities: Sequence[np.ndarray], threshold: float, portion: float,
                  masks: Sequence[np.ndarray | None] | None = None) -> PseudoLabels:
    """Class-balanced pseudo-labels of a set of images from their probability maps.

    Args:
        probabilities: ``HxWxK`` per image.
        threshold: Global confidence threshold (see :func:`class_thresholds`).
        portion: Share of each class's pixels kept whatever their confidence.
        masks: Predicted masks with 255 where an image has no data (``None``: every pixel).

    Returns:
        The pseudo-labels.

    Raises:
        EdgesegError: With no images, or a bad threshold or portion.
    """
    if not probabilities:
        raise EdgesegError("no images to pseudo-label")
    given = list(masks) if masks is not None else [None] * len(probabilities)
    pairs = [confidence(p, m) for p, m in zip(probabilities, given, strict=True)]
    labels, confs = [p[0] for p in pairs], [p[1] for p in pairs]
    k = max(int(probabilities[0].shape[-1]), 2)
    return select(labels, confs, class_thresholds(labels, confs, k, threshold, portion))
