"""The training input pipeline: random (optionally class-balanced) crops from large images.

Crops are drawn in NumPy from in-memory samples and fed through ``tf.data`` (a generator,
batched and prefetched). Every random choice of crop ``i`` comes from ``numpy.random.default_rng([seed,
epoch, i])``: the same seed gives the same batches, a run resumed at epoch ``e`` sees what an
uninterrupted run would have seen, and workers of a distributed run that split each global
batch between them see together what one process sees.

Per crop:

1. centre: with probability ``balance`` a pixel of one class, the class drawn with weights
   ``1 / sqrt(share)`` (rare classes more often) from a per-image index of class pixels;
   otherwise uniform over the image;
2. a square window around it, shifted inward at the image edge: ``crop`` pixels, or with scale
   jitter ``crop * z`` for a zoom ``z`` drawn log-uniformly in ``[1 / (1 + s), 1 + s]`` and
   resized to ``crop`` (image bilinear, mask nearest), so the model sees objects at more than
   one size; images smaller than the window are padded by reflection and their padded mask
   pixels are ignore (255);
3. augmentation: horizontal / vertical flips, a 90-degree rotation (k in 0..3), and colour
   jitter: gamma, per-channel gain, contrast (scaled about the crop's mean) and brightness
   (added, fraction of 255) -- scenes from different passes differ in all four;
4. normalisation ``(pixel - 127.5) / 127.5`` (:data:`edgeseg.models.NORMALISATION`), or with
   per-image standardisation each band by the mean and standard deviation of the whole image
   the crop comes from (:mod:`firmware_bridge.runtime.standardise`, as the device does).

Validation does not use crops: it predicts full images tile by tile (``firmware_bridge.evaluate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgeseg.data.dataset import Sample
from edgeseg.data.stats import class_pixel_counts
from edgeseg.tf_env import tf_keras
from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.standardise import band_statistics

MEAN = 127.5
STD = 127.5


def normalise(image: np.ndarray) -> np.ndarray:
    """Map 8-bit pixels to the model's input range: ``(pixel - 127.5) / 127.5`` as float32."""
    return (np.asarray(image, np.float32) - MEAN) / STD


@dataclass(frozen=True)
class Augment:
    """Augmentation switches and ranges.

    Attributes:
        flips: Random horizontal and vertical flips.
        rotate90: Random rotation by a multiple of 90 degrees (crops are square).
        brightness: Maximum added brightness, as a fraction of 255 (0 disables).
        contrast: Maximum relative contrast change, e.g. 0.2 for factors in [0.8, 1.2].
        channel_gain: Maximum relative gain per band, drawn per band (a colour cast).
        gamma: Maximum gamma exponent change in octaves: ``(x / 255) ** 2**u``, ``|u| <= gamma``.
        scale: Scale jitter ``s``: windows of ``crop * z`` pixels, ``z`` log-uniform in
            ``[1 / (1 + s), 1 + s]``, resized to the crop (0: none).

    """

    flips: bool = True
    rotate90: bool = True
    brightness: float = 0.1
    contrast: float = 0.2
    channel_gain: float = 0.05
    gamma: float = 0.1
    scale: float = 0.0

    @classmethod
    def with_colour(cls, strength: float, scale: float = 0.0) -> Augment:
        """Flips and rotations with the default colour jitter scaled by ``strength``, and ``scale`` jitter.

        ``strength`` 1 is the defaults above (brightness 0.1, contrast 0.2, channel gain 0.05,
        gamma 0.1); 0 turns colour jitter off.

        Raises:
            EdgesegError: For a negative strength or scale.
        """
        if strength < 0 or scale < 0:
            raise EdgesegError(f"colour jitter and scale jitter must be >= 0, got {strength}, {scale}")
        base = cls()
        return cls(True, True, base.brightness * strength, base.contrast * strength,
                   base.channel_gain * strength, base.gamma * strength, scale)

    @classmethod
    def off(cls) -> Augment:
        """No augmentation at all."""
        return cls(False, False, 0.0, 0.0, 0.0, 0.0)


def class_pixel_index(
    samples: Sequence[Sample], num_classes: int, per_image: int = 4096, seed: int = 0
) -> list[np.ndarray]:
    """Index pixels by class for class-balanced crop centres.

    Args:
        samples: Training samples.
        num_classes: ``K``.
        per_image: At most this many pixel positions kept per class and image (a random subset).
        seed: Seed of the subset choice.

    Returns:
        One ``(n, 3)`` int array per class of rows ``(sample index, y, x)``; empty for a class
        with no pixels.
    """
    rng = np.random.default_rng(seed)
    found: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for i, sample in enumerate(samples):
        flat = sample.mask.ravel()
        for c in range(num_classes):
            pos = np.flatnonzero(flat == c)
            if pos.size == 0:
                continue
            if pos.size > per_image:
                pos = rng.choice(pos, per_image, replace=False)
            y, x = np.divmod(pos, sample.mask.shape[1])
            found[c].append(np.stack([np.full_like(y, i), y, x], axis=1))
    return [np.concatenate(f) if f else np.zeros((0, 3), np.int64) for f in found]


def balanced_class_probs(counts: np.ndarray) -> np.ndarray:
    """Probabilities of picking each class as a crop centre: ``1/sqrt(share)``, normalised.

    Classes with no pixels get probability 0.
    """
    counts = np.asarray(counts, np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    weights[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    return weights / weights.sum()


def crop_window(height: int, width: int, crop: int, cy: int, cx: int) -> tuple[int, int]:
    """Top-left corner of a ``crop`` window centred on ``(cy, cx)``, shifted inside the image."""
    y0 = min(max(cy - crop // 2, 0), max(height - crop, 0))
    x0 = min(max(cx - crop // 2, 0), max(width - crop, 0))
    return y0, x0


def _pad(image: np.ndarray, mask: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    ph, pw = max(0, crop - image.shape[0]), max(0, crop - image.shape[1])
    if ph == 0 and pw == 0:
        return image, mask
    image = np.pad(image, [(0, ph), (0, pw), (0, 0)], mode="reflect")
    mask = np.pad(mask, [(0, ph), (0, pw)], constant_values=IGNORE_INDEX)
    return image, mask


def zoom_size(crop: int, scale: float, u: float) -> int:
    """Edge of the window that scale jitter resizes to ``crop``.

    Args:
        crop: Crop edge.
        scale: Scale jitter ``s`` (0: none).
        u: A uniform draw in ``[-1, 1]``; the zoom is ``(1 + s) ** u``.

    Returns:
        ``round(crop * (1 + s) ** u)``, at least 1.
    """
    return max(1, round(crop * (1.0 + scale) ** u)) if scale else crop


def resize_crop(image: np.ndarray, mask: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a square window to ``crop x crop``: the image bilinear, the mask nearest."""
    from PIL import Image

    if image.shape[0] == crop and image.shape[1] == crop:
        return image, mask
    img = Image.fromarray(np.ascontiguousarray(image)).resize((crop, crop), Image.BILINEAR)
    msk = Image.fromarray(np.ascontiguousarray(mask)).resize((crop, crop), Image.NEAREST)
    return np.asarray(img), np.asarray(msk)


def normalise_with(image: np.ndarray, norm: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """:func:`normalise`, or ``(pixel - mean) / std`` per band for a standardised image.

    Args:
        image: 8-bit pixels (any float or integer dtype).
        norm: ``(mean, std)`` per band (:meth:`~firmware_bridge.runtime.standardise.BandStats.normalisation`
            of the image's statistics); ``None``: the fixed normalisation.
    """
    if norm is None:
        return normalise(image)
    return (np.asarray(image, np.float32) - norm[0]) / norm[1]


def standardising(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-band ``(mean, std)`` that standardises ``image`` as the device does.

    The same statistics as :meth:`firmware_bridge.runtime.segmenter.Segmenter.image_statistics`
    (every pixel of an 8-bit training image holds data).
    """
    stats = band_statistics(image)
    if stats is None:
        raise EdgesegError("an empty image cannot be standardised")
    return stats.normalisation()


def augment(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, aug: Augment,
    norm: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip, rotate and jitter one crop.

    Args:
        image: ``HxWx3`` uint8 crop.
        mask: ``HxW`` uint8 mask.
        rng: Random generator (consumed in a fixed order, whatever the switches).
        aug: Switches and ranges.
        norm: Per-band ``(mean, std)`` of the whole image the crop comes from, for a model
            standardised per image (:func:`standardising`); ``None``: :func:`normalise`.

    Returns:
        ``(image float32 normalised, mask uint8)``.
    """
    flip_h, flip_v = rng.random(2) < 0.5
    k = int(rng.integers(4))
    b, c = rng.uniform(-1.0, 1.0, 2)
    g, gains = rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0, 3)
    if aug.flips and flip_h:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if aug.flips and flip_v:
        image, mask = image[::-1], mask[::-1]
    if aug.rotate90 and k:
        image, mask = np.rot90(image, k), np.rot90(mask, k)
    out = np.asarray(image, np.float32)
    if aug.gamma:
        out = 255.0 * (out / 255.0) ** np.float32(2.0 ** (aug.gamma * g))
    if aug.channel_gain:
        out = out * (1.0 + aug.channel_gain * gains[: out.shape[2]]).astype(np.float32)
    if aug.contrast:
        mean = out.mean(axis=(0, 1), keepdims=True)
        out = (out - mean) * (1.0 + aug.contrast * c) + mean
    if aug.brightness:
        out = out + 255.0 * aug.brightness * b
    return normalise_with(np.clip(out, 0.0, 255.0), norm), np.ascontiguousarray(mask)


class CropSampler:
    """Draws augmented crops from in-memory samples.

    Args:
        samples: Training samples (``image`` HxWx3 uint8, ``mask`` HxW uint8).
        num_classes: ``K``.
        crop: Crop edge in pixels.
        balance: Probability that a crop is centred on a pixel of a class drawn by
            :func:`balanced_class_probs` (0: uniform crops).
        aug: Augmentation settings.
        standardise: Normalise each crop by the band statistics of its whole image
            (:mod:`firmware_bridge.runtime.standardise`) instead of the fixed normalisation.

    Raises:
        EdgesegError: With no samples, or samples that are not 8-bit RGB.
    """

    def __init__(
        self, samples: Sequence[Sample], num_classes: int, crop: int, balance: float = 0.0,
        aug: Augment = Augment(), standardise: bool = False,
    ) -> None:
        if not samples:
            raise EdgesegError("no training samples: check --data and --val-pattern")
        for s in samples:
            if s.image.dtype != np.uint8 or s.image.ndim != 3 or s.image.shape[2] != 3:
                raise EdgesegError(
                    f"{s.stem}: training needs 8-bit RGB images, got {s.image.dtype} "
                    f"with shape {s.image.shape}"
                )
        self.samples = list(samples)
        self.crop = int(crop)
        self.balance = float(balance)
        self.aug = aug
        self.standardise = bool(standardise)
        self.norms = [standardising(s.image) for s in self.samples] if standardise else None
        areas = np.array([s.mask.size for s in self.samples], np.float64)
        self.image_probs = areas / areas.sum()
        self.index = class_pixel_index(self.samples, num_classes) if balance > 0 else None
        if self.index is not None:
            counts, _ = class_pixel_counts([s.mask for s in self.samples], num_classes)
            self.class_probs = balanced_class_probs(counts)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One augmented crop: ``(crop x crop x 3 float32, crop x crop uint8)``."""
        size = zoom_size(self.crop, self.aug.scale, float(rng.uniform(-1.0, 1.0)))
        if self.index is not None and rng.random() < self.balance:
            c = int(rng.choice(len(self.class_probs), p=self.class_probs))
            i, cy, cx = self.index[c][int(rng.integers(len(self.index[c])))]
        else:
            i = int(rng.choice(len(self.samples), p=self.image_probs))
            h, w = self.samples[i].mask.shape
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        image, mask = _pad(self.samples[i].image, self.samples[i].mask, size)
        y0, x0 = crop_window(image.shape[0], image.shape[1], size, int(cy), int(cx))
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        return augment(*resize_crop(image[window], mask[window], self.crop), rng, self.aug,
                       self.norms[i] if self.norms is not None else None)

    def crops(self, seed: int, epoch: int, indices: Iterable[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the crops of an epoch with the given indices.

        Crop ``i`` of ``(seed, epoch)`` is drawn from its own generator seeded with
        ``(seed, epoch, i)``, so it is the same crop whichever process draws it: workers that
        split an epoch's indices between them together see what one process sees.
        """
        for i in indices:
            yield self.draw(np.random.default_rng([int(seed), int(epoch), int(i)]))

    def epoch(self, seed: int, epoch: int, count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``count`` crops of one epoch; the same ``(seed, epoch)`` gives the same crops."""
        return self.crops(seed, epoch, range(count))

    def dataset(self, seed: int, epoch: int, steps: int, batch: int, shard: tuple[int, int] = (0, 1),
                replica_batch: int | None = None):
        """A ``tf.data.Dataset`` of batches ``(images NxHxWx3, masks NxHxW uint8)``.

        Args:
            seed: Run seed.
            epoch: Epoch index.
            steps: Global batches in the epoch.
            batch: Global batch size.
            shard: ``(index, count)``: this input pipeline takes, of every global batch, the
                crops ``index * batch / count`` up to ``(index + 1) * batch / count``.
            replica_batch: Size of the batches yielded (default ``batch / count``): the
                pipeline's share of a step split into per-replica batches, in replica order.

        Returns:
            The dataset (``steps * batch / (count * replica_batch)`` batches).
        """
        tf, _ = tf_keras()
        index, count = shard
        share = batch // count
        replica_batch = replica_batch or share
        indices = [b * batch + index * share + j for b in range(steps) for j in range(share)]
        c = self.crop
        ds = tf.data.Dataset.from_generator(
            lambda: self.crops(seed, epoch, indices),
            output_signature=(
                tf.TensorSpec((c, c, 3), tf.float32), tf.TensorSpec((c, c), tf.uint8),
            ),
        )
        return ds.batch(replica_batch, drop_remainder=True).prefetch(2)
