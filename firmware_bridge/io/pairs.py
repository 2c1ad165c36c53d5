"""Pair images with masks by file stem: a dataset is a folder with ``images/`` and ``masks/``."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.errors import EdgesegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
EXPECTED = ("a dataset holds an images/ and a masks/ folder with one mask per image, paired by "
            "file stem (images/a.png with masks/a.png)")
"""What a dataset folder must hold, for the messages."""


@dataclass(frozen=True)
class Pair:
    """One image and its mask, paired by file stem."""

    stem: str
    image: Path
    mask: Path


@dataclass
class Pairing:
    """Result of pairing a dataset folder.

    Attributes:
        pairs: Matched pairs, sorted by stem.
        problems: One line per file without a partner (``"<path>: no mask for this image"``).

    """

    pairs: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _by_stem(folder: Path) -> dict[str, Path]:
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return {p.stem: p for p in files}


def find_pairs(root: str | Path) -> Pairing:
    """Pair ``root/images/*`` with ``root/masks/*`` by file stem.

    Files without a partner are reported in ``problems`` rather than raised, so that a data
    check can list every problem at once.

    Args:
        root: Dataset folder holding ``images/`` and ``masks/``.

    Returns:
        The pairs and the problems found.

    Raises:
        EdgesegError: When ``root``, ``images/`` or ``masks/`` is missing, ``root`` is empty,
            or neither folder holds an image file (the message says what a dataset holds).

    """
    root = Path(root)
    if not root.is_dir():
        raise EdgesegError(f"{root}: dataset folder does not exist")
    if not any(root.iterdir()):
        raise EdgesegError(f"{root}: the folder is empty; {EXPECTED}")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise EdgesegError(f"{root}: no '{sub}/' folder (a dataset holds images/ and masks/)")
    images, masks = _by_stem(root / "images"), _by_stem(root / "masks")
    if not images and not masks:
        raise EdgesegError(f"{root}: images/ and masks/ hold no image files "
                           f"({', '.join(IMAGE_SUFFIXES)}); {EXPECTED}")
    result = Pairing()
    for stem in sorted(images.keys() | masks.keys()):
        if stem not in masks:
            result.problems.append(f"{images[stem]}: no mask with this stem in {root / 'masks'}")
        elif stem not in images:
            result.problems.append(f"{masks[stem]}: no image with this stem in {root / 'images'}")
        else:
            result.pairs.append(Pair(stem, images[stem], masks[stem]))
    return result


HOLDOUT_EVERY = 5
"""Without a validation pattern, every fifth pair (by sorted stem) validates."""


def matches(stem: str, pattern: str) -> bool:
    """Whether ``stem`` matches one of the comma-separated globs of ``pattern``."""
    return any(fnmatch.fnmatch(stem, g.strip()) for g in pattern.split(",") if g.strip())


def holdout_pattern(pairs: list[Pair], every: int = HOLDOUT_EVERY) -> str:
    """A deterministic validation split when none is given: every ``every``-th stem, sorted.

    The 5th, 10th, ... stems in sorted order (the last one when there are fewer than
    ``every``), so the same folder always splits the same way, on any machine.

    Returns:
        The held-out stems as a pattern (comma-separated) for :func:`split_by_pattern`.

    Raises:
        EdgesegError: With fewer than two pairs (nothing would be left to train on).
    """
    stems = sorted(p.stem for p in pairs)
    if len(stems) < 2:
        raise EdgesegError(f"{len(stems)} image/mask pair(s): validation needs a second one; add "
                           "images, or give a folder of validation pairs with --val-pattern")
    held = stems[every - 1 :: every] or stems[-1:]
    return ",".join(held)


def split_by_pattern(
    pairs: list[Pair], pattern: str, need_train: bool = True
) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (train, validation) by globs on the stem, e.g. ``"tile7_*"`` or ``"a,b*"``.

    Args:
        pairs: Pairs to split.
        pattern: ``fnmatch`` patterns, comma-separated; stems that match one go to validation.
        need_train: ``False`` where only the validation pairs are used (evaluation, export):
            the pattern may then match every pair.

    Returns:
        ``(train, val)``.

    Raises:
        EdgesegError: When the pattern selects no pair, or every pair while ``need_train``.

    """
    val = [p for p in pairs if matches(p.stem, pattern)]
    train = [p for p in pairs if not matches(p.stem, pattern)]
    if not val:
        raise EdgesegError(f"validation pattern {pattern!r} matches no file stem")
    if not train and need_train:
        raise EdgesegError(f"validation pattern {pattern!r} matches every file: nothing to train on")
    return train, val
