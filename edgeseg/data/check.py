"""``edgeseg data check``: read every pair, report sizes, class shares and every problem."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edgeseg.data.dataset import load_sample
from edgeseg.data.stats import (
    class_pixel_counts,
    inverse_frequency_weights,
    median_frequency_weights,
)
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.pairs import find_pairs


@dataclass
class DataReport:
    """What a data check found.

    Attributes:
        pairs: Number of pairs that decoded cleanly.
        sizes: ``(width, height) -> count`` over decoded images.
        counts: Pixels per class.
        ignored: Ignore pixels.
        problems: One line per problem, each naming the file.
        class_names: Names for ``counts``.

    """

    pairs: int = 0
    sizes: Counter = field(default_factory=Counter)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ignored: int = 0
    problems: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def render(self) -> str:
        """Human-readable report."""
        total = int(self.counts.sum()) + self.ignored
        lines = [f"pairs: {self.pairs}"]
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(self.sizes.items()))
        lines.append(f"image sizes (WxH): {sizes or '-'}")
        if total:
            inv = inverse_frequency_weights(self.counts)
            med = median_frequency_weights(self.counts)
            lines.append(f"{'class':<14} {'share':>7} {'pixels':>12} {'w_inv':>7} {'w_median':>8}")
            for i, name in enumerate(self.class_names):
                share = 100.0 * self.counts[i] / total
                lines.append(
                    f"{name:<14} {share:6.2f}% {int(self.counts[i]):>12} {inv[i]:7.3f} {med[i]:8.3f}"
                )
            lines.append(f"{'(ignore)':<14} {100.0 * self.ignored / total:6.2f}% {self.ignored:>12}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {p}" for p in self.problems]
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def check_dataset(root: str, table: ClassTable, unknown_to_ignore: bool = False,
                  progress: bool = False) -> DataReport:
    """Pair and decode every file of a dataset, collecting every problem instead of stopping.

    Args:
        root: Dataset folder (``images/`` + ``masks/``).
        table: Class table.
        unknown_to_ignore: Count unknown mask colours as ignore instead of reporting them.
        progress: Show a progress bar.

    Returns:
        The report (``report.ok`` is False when anything is wrong).

    Raises:
        EdgesegError: When the folder layout itself is wrong (no images/ or masks/).

    """
    pairing = find_pairs(root)
    report = DataReport(problems=list(pairing.problems), class_names=list(table.names))
    masks = []
    pairs = pairing.pairs
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="checking", unit="pair", leave=False)
    for pair in pairs:
        try:
            sample = load_sample(pair, table, unknown_to_ignore=unknown_to_ignore)
        except EdgesegError as exc:
            report.problems.append(str(exc))
            continue
        report.pairs += 1
        report.sizes[(sample.image.shape[1], sample.image.shape[0])] += 1
        masks.append(sample.mask)
    report.counts, report.ignored = class_pixel_counts(masks, table.num_classes)
    return report
