"""Image/mask pairs from a dataset folder, decoded through a class table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.images import read_image, read_mask
from firmware_bridge.io.pairs import Pair, find_pairs, split_by_pattern


@dataclass
class Sample:
    """One decoded pair: ``image`` HxWxC (native dtype), ``mask`` HxW uint8 (255 = ignore)."""

    stem: str
    image: np.ndarray
    mask: np.ndarray


def load_sample(
    pair: Pair, table: ClassTable, bands: Sequence[int] | None = None,
    unknown_to_ignore: bool = False,
) -> Sample:
    """Read and decode one pair.

    Args:
        pair: Image and mask paths.
        table: Class table used to decode the mask.
        bands: 1-based image bands to keep (``None``: all).
        unknown_to_ignore: Map unknown mask colours to ignore instead of failing.

    Returns:
        The decoded sample.

    Raises:
        EdgesegError: Unreadable file, size mismatch or unknown colour (names the file).

    """
    image = read_image(pair.image, bands)
    raw = read_mask(pair.mask)
    if raw.shape[:2] != image.shape[:2]:
        raise EdgesegError(
            f"{pair.mask}: mask is {raw.shape[1]}x{raw.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    mask = table.decode_mask(raw, str(pair.mask), unknown_to_ignore)
    return Sample(pair.stem, image, mask)


def load_split(
    root: str, table: ClassTable, val_pattern: str | None = None,
    bands: Sequence[int] | None = None, unknown_to_ignore: bool = False, need_train: bool = True,
) -> tuple[list[Sample], list[Sample]]:
    """Load a dataset folder, split into (train, validation) by a stem pattern.

    Args:
        root: Dataset folder (``images/`` + ``masks/``).
        table: Class table.
        val_pattern: Glob on stems for validation (e.g. ``"tile7_*"``); ``None``: no validation.
        bands: 1-based image bands to keep.
        unknown_to_ignore: See :func:`load_sample`.
        need_train: ``False`` where only the validation samples are used (evaluation, export):
            the pattern may then match every pair, and the training samples are not decoded.

    Returns:
        ``(train, val)`` lists of samples.

    Raises:
        EdgesegError: When pairing finds problems or no pairs, or a file fails to decode.

    """
    pairing = find_pairs(root)
    if pairing.problems:
        raise EdgesegError(
            f"{pairing.problems[0]} (and {len(pairing.problems) - 1} more problems): "
            f"run 'edgeseg data check {root}'" if len(pairing.problems) > 1 else pairing.problems[0]
        )
    if not pairing.pairs:
        raise EdgesegError(f"{root}: no image/mask pairs found")
    if val_pattern:
        train, val = split_by_pattern(pairing.pairs, val_pattern, need_train)
        if not need_train:
            train = []
    else:
        train, val = pairing.pairs, []

    def load(pairs: list[Pair]) -> list[Sample]:
        return [load_sample(p, table, bands, unknown_to_ignore) for p in pairs]

    return load(train), load(val)
