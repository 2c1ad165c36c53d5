"""Unlabelled images in, pseudo-labels out: the model over whole images with test-time flips."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgeseg.adaptation.pseudo import PseudoLabels, class_thresholds, confidence, select
from edgeseg.data.dataset import Sample
from export.keras_backend import keras_segmenter
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.images import read_image
from firmware_bridge.io.pairs import IMAGE_SUFFIXES
from firmware_bridge.runtime.metadata import ModelMetadata
from firmware_bridge.runtime.segmenter import SegmenterOptions

TTA = "flips"
"""Test-time augmentation of the pseudo-labelling prediction (three views of every tile)."""


def read_images(folder: str | Path) -> list[tuple[str, np.ndarray]]:
    """The images of a folder of unlabelled scenes, by stem.

    Args:
        folder: A folder of PNG, JPEG or TIFF images (8-bit RGB, as the training images).

    Returns:
        ``(stem, HxWx3 uint8)`` pairs, sorted by file name.

    Raises:
        EdgesegError: For a missing folder, one without images, two images with one stem, an
            unreadable image, one that is not 8-bit RGB or one too small for the model (each
            names the file and what to do).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgesegError(f"{folder}: not a folder; pass the folder of unlabelled images with "
                           "--images")
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise EdgesegError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); pass the folder "
                           "of unlabelled images with --images")
    seen: dict[str, Path] = {}
    out = []
    for path in files:
        if path.stem in seen:
            raise EdgesegError(f"{path}: {seen[path.stem].name} has the same stem; keep one image "
                               "per name in the folder")
        seen[path.stem] = path
        image = read_image(path)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise EdgesegError(f"{path}: {image.dtype} with {image.shape[2] if image.ndim == 3 else 1}"
                               " band(s); adaptation takes 8-bit RGB images, as training does")
        if min(image.shape[:2]) < SegmenterOptions.min_size:
            raise EdgesegError(f"{path}: {image.shape[1]}x{image.shape[0]} is smaller than "
                               f"{SegmenterOptions.min_size} px, too little for the model to see; "
                               "leave it out of the folder")
        out.append((path.stem, image))
    return out


def predict(model, spec: ModelMetadata, images: Sequence[np.ndarray],
            on_image: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predicted class and confidence of every pixel of whole images.

    The Keras model runs behind the device's Segmenter with the spec's tile, overlap and
    normalisation, and with test-time flips (:data:`TTA`); only the class and its probability
    are kept of each image's probabilities.

    Args:
        model: A fixed-size Keras model (its input is the tile).
        spec: The run's spec (:func:`edgeseg.spec.run_spec`).
        images: ``HxWx3`` images.
        on_image: Called with the index of each image once predicted.

    Returns:
        ``(labels, confidences)``, one ``HxW`` array each per image (255 / -1 without data).
    """
    segmenter = keras_segmenter(model, spec, tta=TTA)
    labels, confs = [], []
    for i, image in enumerate(images):
        result = segmenter.predict_tiled(image, probabilities=True)
        lab, conf = confidence(result.probabilities, result.mask)
        labels.append(lab)
        confs.append(conf)
        if on_image is not None:
            on_image(i)
    return labels, confs


def pseudo_samples(model, spec: ModelMetadata, images: Sequence[tuple[str, np.ndarray]],
                   threshold: float, portion: float) -> tuple[list[Sample], PseudoLabels]:
    """Class-balanced pseudo-labels of unlabelled images, as training samples.

    Args:
        model: A fixed-size Keras model.
        spec: The run's spec.
        images: ``(stem, image)`` pairs from :func:`read_images`.
        threshold: Global confidence threshold (:func:`edgeseg.adaptation.pseudo.class_thresholds`).
        portion: Share of each class's predicted pixels kept whatever their confidence.

    Returns:
        ``(samples, labels)``: one sample per image whose mask is its pseudo-labels, and how
        they were chosen.
    """
    labels, confs = predict(model, spec, [image for _, image in images])
    k = max(len(spec.classes), 2)
    chosen = select(labels, confs, class_thresholds(labels, confs, k, threshold, portion))
    samples = [Sample(stem, image, mask)
               for (stem, image), mask in zip(images, chosen.masks, strict=True)]
    return samples, chosen
