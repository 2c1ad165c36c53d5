"""The one metric core: a streaming confusion matrix and the scores derived from it.

Training (``edgeseg evaluate``), export parity checks and the device (``edgeseg-run validate``)
all use this module, so a number means the same thing everywhere.

Definitions, per class ``c`` with ``TP``, ``FP``, ``FN`` from the confusion matrix ``M``
(rows: truth, columns: prediction; ignore pixels never enter it):

* ``IoU = TP / (TP + FP + FN)``, ``Dice = 2 TP / (2 TP + FP + FN)`` (so ``Dice = 2 IoU / (1 + IoU)``)
* ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``
* pixel accuracy ``= trace(M) / sum(M)``
* frequency-weighted IoU ``= sum_c (truth pixels of c / all pixels) * IoU_c``

Absent classes: a class absent from both truth and prediction (``TP + FP + FN = 0``) has an
undefined IoU and Dice (NaN) and is left out of the means; mean IoU and mean Dice are the
averages over the classes that occur in the truth or the prediction. A class that is predicted
but absent from the truth counts with IoU 0. Precision / recall are NaN when their denominator
is zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_bridge import IGNORE_INDEX


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Count (truth, prediction) pairs over all pixels not marked ignore in the truth.

    Args:
        y_true: Integer class map, any shape.
        y_pred: Integer class map, same shape.
        num_classes: ``K``; truth values outside ``0..K-1`` other than ``ignore_index`` raise.
        ignore_index: Truth value whose pixels are skipped.

    Returns:
        ``int64`` array ``K x K``; ``M[t, p]`` counts pixels of truth ``t`` predicted ``p``.

    Raises:
        ValueError: When shapes differ or labels fall outside ``0..K-1``.

    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"truth {y_true.shape} and prediction {y_pred.shape} differ in shape")
    keep = y_true != ignore_index
    t = y_true[keep].astype(np.int64)
    p = y_pred[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"truth labels must lie in 0..{num_classes - 1} or be {ignore_index}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted labels must lie in 0..{num_classes - 1}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass
class SegScores:
    """Scores derived from one confusion matrix (see the module docstring for definitions)."""

    matrix: np.ndarray
    class_names: list[str]
    iou: np.ndarray = field(init=False)
    dice: np.ndarray = field(init=False)
    precision: np.ndarray = field(init=False)
    recall: np.ndarray = field(init=False)
    pixel_accuracy: float = field(init=False)
    miou: float = field(init=False)
    mdice: float = field(init=False)
    fwiou: float = field(init=False)

    def __post_init__(self) -> None:
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        fp = m.sum(axis=0) - tp
        fn = m.sum(axis=1) - tp
        total = m.sum()
        self.iou = _ratio(tp, tp + fp + fn)
        self.dice = _ratio(2 * tp, 2 * tp + fp + fn)
        self.precision = _ratio(tp, tp + fp)
        self.recall = _ratio(tp, tp + fn)
        self.pixel_accuracy = float(tp.sum() / total) if total else float("nan")
        self.miou = _nanmean(self.iou)
        self.mdice = _nanmean(self.dice)
        freq = m.sum(axis=1) / total if total else np.zeros_like(tp)
        present = freq > 0
        self.fwiou = float(np.sum(freq[present] * self.iou[present])) if total else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes ``None``)."""

        def clean(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        per_class = {
            name: {
                "iou": clean(self.iou[i]), "dice": clean(self.dice[i]),
                "precision": clean(self.precision[i]), "recall": clean(self.recall[i]),
                "pixels": int(self.matrix[i].sum()),
            }
            for i, name in enumerate(self.class_names)
        }
        return {
            "miou": clean(self.miou), "mdice": clean(self.mdice), "fwiou": clean(self.fwiou),
            "pixel_accuracy": clean(self.pixel_accuracy), "per_class": per_class,
            "confusion_matrix": self.matrix.tolist(),
        }

    def table(self) -> str:
        """A plain-text per-class table with the means underneath."""

        def fmt(v: float) -> str:
            return "   -  " if np.isnan(v) else f"{v:6.3f}"

        width = max([len(n) for n in self.class_names] + [5])
        lines = [f"{'class':<{width}}    IoU   Dice   Prec    Rec     pixels"]
        for i, name in enumerate(self.class_names):
            lines.append(
                f"{name:<{width}} {fmt(self.iou[i])} {fmt(self.dice[i])} {fmt(self.precision[i])}"
                f" {fmt(self.recall[i])} {int(self.matrix[i].sum()):>10}"
            )
        lines.append(
            f"{'mean':<{width}} {fmt(self.miou)} {fmt(self.mdice)}   pixel acc {fmt(self.pixel_accuracy)}"
            f"   fwIoU {fmt(self.fwiou)}"
        )
        return "\n".join(lines)


class ConfusionMatrix:
    """A confusion matrix that accumulates over images (streaming: memory is ``K x K``).

    Args:
        num_classes: ``K``.
        ignore_index: Truth value whose pixels are skipped.

    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> ConfusionMatrix:
        """Add one image (or batch) of truth and prediction; returns ``self``."""
        self.matrix += confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_index)
        return self

    def scores(self, class_names: list[str] | None = None) -> SegScores:
        """Scores of everything accumulated so far."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        return SegScores(self.matrix.copy(), list(names))
