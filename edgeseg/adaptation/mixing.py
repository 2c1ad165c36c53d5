"""Training crops from labelled and pseudo-labelled images together, in a fixed ratio."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from edgeseg.data.dataset import Sample
from edgeseg.data.pipeline import Augment, CropSampler
from firmware_bridge.errors import EdgesegError


def from_pseudo(index: int, mix: float) -> bool:
    """Whether crop ``index`` of an epoch comes from the pseudo-labelled images.

    Crops ``0, 1, 2 ...`` take the pseudo-labelled source ``floor((i + 1) * mix) - floor(i * mix)``
    times, so any ``n`` consecutive crops hold ``n * mix`` of them, rounded: a batch of 8 at
    ``mix`` 0.5 is always 4 and 4.
    """
    return math.floor((index + 1) * mix + 1e-9) > math.floor(index * mix + 1e-9)


class MixedSampler(CropSampler):
    """A :class:`~edgeseg.data.pipeline.CropSampler` whose crops come from two image sets.

    Every crop is drawn as the training sampler draws it (window, flips, rotation, colour
    jitter), from the labelled images or from the pseudo-labelled ones by
    :func:`from_pseudo`; crop ``i`` of ``(seed, epoch)`` is the same wherever it is drawn.

    Args:
        labelled: Training samples with their masks.
        pseudo: Unlabelled images with pseudo-label masks (255: ignore).
        num_classes: ``K``.
        crop: Crop edge.
        mix: Share of the crops from ``pseudo`` (0 to 1).
        balance: Class-balanced crop centres, as in training.
        aug: Augmentation, as in training (``None``: the default :class:`Augment`).
        standardise: Per-image standardisation, as in training.

    Raises:
        EdgesegError: For a share outside ``[0, 1]``, or an empty or non-RGB image set.
    """

    def __init__(self, labelled: Sequence[Sample], pseudo: Sequence[Sample], num_classes: int,
                 crop: int, mix: float, balance: float = 0.0, aug: Augment | None = None,
                 standardise: bool = False) -> None:
        if not 0 <= mix <= 1:
            raise EdgesegError(f"the share of pseudo-labelled crops is between 0 and 1, got {mix}")
        aug = aug or Augment()
        super().__init__(labelled, num_classes, crop, balance, aug, standardise)
        self.num_classes, self.mix = num_classes, float(mix)
        self.pseudo = CropSampler(pseudo, num_classes, crop, balance, aug, standardise)

    def set_pseudo(self, pseudo: Sequence[Sample]) -> None:
        """Replace the pseudo-labelled images (new labels of a new round)."""
        self.pseudo = CropSampler(pseudo, self.num_classes, self.crop, self.balance, self.aug,
                                  self.standardise)

    def crops(self, seed: int, epoch: int, indices: Iterable[int]
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the crops with the given indices, each from its source by :func:`from_pseudo`."""
        for i in indices:
            rng = np.random.default_rng([int(seed), int(epoch), int(i)])
            yield self.pseudo.draw(rng) if from_pseudo(int(i), self.mix) else self.draw(rng)
