"""Optional progress bars: tqdm when installed and wanted, silently none otherwise."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "",
             enabled: bool = True, unit: str = "it") -> Iterator[T] | Iterable[T]:
    """Wrap ``items`` in a tqdm bar (on stderr) when ``enabled`` and tqdm is installed.

    Args:
        items: What to iterate over.
        total: Number of items, for the bar's length.
        desc: Label in front of the bar.
        enabled: False gives the plain iterable (quiet mode, tests).
        unit: Unit name shown in the rate.

    Returns:
        An iterable over the same items.
    """
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, desc=desc, unit=unit, leave=False)
