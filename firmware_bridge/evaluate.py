"""The one scoring loop: a :class:`~firmware_bridge.runtime.segmenter.Segmenter` over images with truth.

Every score in edgeseg comes from here: ``edgeseg-run validate`` on the device, training's
validation and ``edgeseg evaluate`` (the Keras model behind the same ``Segmenter``), QAT's
validation, the export's parity check and ``edgeseg bench``. Each image is predicted whole with
tiling (:meth:`Segmenter.predict_tiled`), its mask goes into one streaming confusion matrix
(:mod:`firmware_bridge.metrics`), and, when reference masks are given (another model's, e.g. the
Keras model's for an exported artifact), the share of pixels where the two agree is counted.
Pixels without data in the image (NaN, infinite, or the raster's nodata value: 255 in the
predicted mask) are left out of the scores like ignore pixels of the truth, and counted in
``Scored.nodata``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError
from firmware_bridge.metrics import ConfusionMatrix, SegScores
from firmware_bridge.progress import progress as progress_bar


@dataclass
class Scored:
    """What :func:`score` measured.

    Attributes:
        scores: The metric core's scores over all images.
        images: Images scored.
        agreement: Share of pixels whose class equals the reference's (``None`` without one).
        masks: The predicted masks, when asked to keep them.
        nodata: Pixels without data in the images, left out of the scores.
        notes: One-line notes for the user (alpha bands dropped, ...).
    """

    scores: SegScores
    images: int
    agreement: float | None = None
    masks: list[np.ndarray] | None = None
    nodata: int = 0
    notes: list[str] = field(default_factory=list)


def score(segmenter, pairs: Iterable[tuple[np.ndarray, np.ndarray]],
          class_names: list[str] | None = None, reference: Sequence[np.ndarray] | None = None,
          keep_masks: bool = False, progress: bool = False, total: int | None = None) -> Scored:
    """Predict every image with tiling and score the masks against the truth.

    Args:
        segmenter: Any :class:`~firmware_bridge.runtime.segmenter.Segmenter` (a device model, or the
            Keras model behind the same interface).
        pairs: ``(image HxWxC, truth HxW)`` pairs, or ``(image, truth, nodata)`` with the
            image's nodata value; truth holds class indices, 255 = ignore.
        class_names: Names for the score table (default: the segmenter's).
        reference: Masks of another model, one per pair, to count agreement with.
        keep_masks: Keep the predicted masks in the result.
        progress: Show a progress bar (``total`` images).
        total: Number of pairs, for the bar.

    Returns:
        The scores, and agreement / masks when asked for.

    Raises:
        EdgesegError: With no pairs, a truth whose size differs from its image, or fewer
            reference masks than pairs.
    """
    cm = ConfusionMatrix(segmenter.num_classes)
    same = seen = count = nodata = 0
    masks: list[np.ndarray] = []
    for item in progress_bar(pairs, total, "validate", progress, "img"):
        image, truth = item[0], item[1]
        nodata_value = item[2] if len(item) > 2 else None
        if truth.shape != image.shape[:2]:
            raise EdgesegError(f"image {count + 1}: its mask is {truth.shape[1]}x{truth.shape[0]} but "
                               f"the image is {image.shape[1]}x{image.shape[0]}")
        result = (segmenter.predict_tiled(image) if nodata_value is None
                  else segmenter.predict_tiled(image, nodata=nodata_value))
        mask = result.mask
        if result.nodata:
            truth = np.where(mask == IGNORE_INDEX, IGNORE_INDEX, truth).astype(truth.dtype)
            nodata += result.nodata
        cm.update(truth, mask)
        if reference is not None:
            if count >= len(reference):
                raise EdgesegError(f"{len(reference)} reference masks for more images")
            same += int(np.count_nonzero(mask == reference[count]))
            seen += mask.size
        if keep_masks:
            masks.append(mask)
        count += 1
    if count == 0:
        raise EdgesegError("no images to score: check the validation pattern and the data folder")
    return Scored(cm.scores(class_names or segmenter.class_names), count,
                  same / seen if reference is not None else None, masks if keep_masks else None,
                  nodata)


def validate_folder(segmenter, data, table=None, unknown_to_ignore: bool = False,
                    progress: bool = False, bands=None) -> tuple[Scored, list[str]]:
    """Score a model on a dataset folder (``images/`` + ``masks/``), as ``edgeseg-run validate``.

    Args:
        segmenter: The model.
        data: Dataset folder, or its pairing from :func:`~firmware_bridge.io.pairs.find_pairs`.
        table: :class:`~firmware_bridge.io.classes.ClassTable` of the masks (``None``: the
            model's own, from its metadata).
        unknown_to_ignore: Mask colours missing from the table count as ignore.
        progress: Show a progress bar.
        bands: 1-based image bands to feed the model (``None``: all, less an alpha band one
            past the model's bands, which :attr:`Scored.notes` then counts).

    Returns:
        ``(scored, problems)``: the scores, and one line per file that could not be paired.

    Raises:
        EdgesegError: With no pairs, a class count that differs from the model's, an image
            the model cannot take, or a mask whose size differs from its image.
    """
    from firmware_bridge.io.images import model_bands, read_mask, read_raster
    from firmware_bridge.io.pairs import find_pairs
    from firmware_bridge.io.raster import class_table

    pairing = data if hasattr(data, "pairs") else find_pairs(data)
    if not pairing.pairs:
        raise EdgesegError(f"{data}: no image/mask pairs to validate on")
    table = table or class_table(segmenter)
    if table.num_classes != segmenter.num_classes:
        raise EdgesegError(f"the class table has {table.num_classes} classes but the model "
                           f"predicts {segmenter.num_classes}: pass the model's class table")

    dropped: list[str] = []

    def pairs():
        for pair in pairing.pairs:
            raster = read_raster(pair.image)
            image, note = model_bands(pair.image, raster, bands, segmenter.channels)
            if note:
                dropped.append(str(pair.image))
            try:
                segmenter.check_image(image)
            except EdgesegError as exc:
                raise EdgesegError(f"{pair.image}: {exc}") from None
            truth = table.decode_mask(read_mask(pair.mask), str(pair.mask), unknown_to_ignore)
            if truth.shape != image.shape[:2]:
                raise EdgesegError(f"{pair.mask}: mask is {truth.shape[::-1]} but the image is "
                                   f"{image.shape[1::-1]}")
            yield image, truth, raster.profile.get("nodata")

    scored = score(segmenter, pairs(), table.names, progress=progress, total=len(pairing.pairs))
    if dropped:
        scored.notes.append(f"note: alpha band dropped from {len(dropped)} image(s) ({dropped[0]}"
                            f"{', ...' if len(dropped) > 1 else ''}): the model takes "
                            f"{segmenter.channels} band(s); --bands chooses others")
    return scored, list(pairing.problems)
