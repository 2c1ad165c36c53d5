"""What a benchmark run measures and with which settings (:class:`BenchOptions`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.errors import EdgesegError

SECTIONS = ("accuracy", "latency", "throughput", "memory", "sizes")
"""Sections in the order they run; ``machine`` facts are always collected."""

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """``$EDGESEG_SHARED``, or the ``shared`` folder beside the repository."""
    return Path(os.environ.get("EDGESEG_SHARED", REPO.parent / "shared"))


def default_data() -> Path:
    """The Dubai aerial set inside the shared folder."""
    return shared_dir() / "data" / "dubai_aerial"


def default_classes() -> Path:
    """The Dubai class table shipped with the repository."""
    return REPO / "examples" / "dubai_classes.csv"


def require_data(path: Path) -> Path:
    """Return ``path`` when it is a dataset folder.

    Raises:
        EdgesegError: Saying how to provide ``../shared`` or another ``--data`` folder.
    """
    if not (path / "images").is_dir():
        raise EdgesegError(
            f"{path}: no dataset here (needs images/ and masks/). The benchmark runs on the "
            f"Dubai set in ../shared: put the shared folder beside the repository, set "
            f"EDGESEG_SHARED to it (now {shared_dir()}), or pass --data DIR"
        )
    return path


@dataclass
class BenchOptions:
    """Settings of one benchmark run.

    Attributes:
        out: Output folder (``bench.json``, ``bench.md``, plots, generated scenes, exports).
        run: Training run directory (Keras model for the TensorFlow baseline, Keras mIoU,
            and the source of exports that are missing); ``None`` skips what needs it.
        artifacts: Export folders to benchmark (one per input size, for instance).
        data: Dataset folder for the accuracy section and export calibration.
        classes: Class table CSV of ``data``.
        val_pattern: Validation images (stem glob).
        sections: Sections to run (others keep their previous results in ``bench.json``).
        formats: Restrict to these export format names (``None``: every one found).
        resolutions: Square input sizes for per-tile latency.
        threads: CPU threads of every runtime, TensorFlow included.
        batch: Tiles per inference call.
        warmup: Untimed calls before the per-tile timing.
        tile_runs: Timed single-tile calls per model and size.
        raster_size: Edge of the generated square raster for tiled throughput.
        throughput_tile: Tile (model input) size of the throughput runs (``None``: the
            first of ``resolutions`` that has artifacts).
        memory_sizes: Edges of the generated square scenes for the peak-memory runs.
        memory_format: Format whose artifact the memory runs use (``None``: QAT int8 TFLite
            when present, else PTQ int8 TFLite).
        block: Streaming block edge of the GeoTIFF runs.
        tensorflow: Also time the Keras model in TensorFlow (needs ``run``).
        export_missing: Export what is missing (artifacts, or a size in ``resolutions``).
        verbose: Progress lines on stderr.
    """

    out: Path = Path("runs/bench")
    run: Path | None = None
    artifacts: list[Path] = field(default_factory=list)
    data: Path | None = None
    classes: Path | None = None
    val_pattern: str = "tile7_*"
    sections: tuple[str, ...] = SECTIONS
    formats: tuple[str, ...] | None = None
    resolutions: tuple[int, ...] = (256, 512)
    threads: int = 2
    batch: int = 1
    warmup: int = 5
    tile_runs: int = 50
    raster_size: int = 8192
    throughput_tile: int | None = None
    memory_sizes: tuple[int, ...] = (2048, 8192, 16384)
    memory_format: str | None = None
    block: int = 1024
    tensorflow: bool = True
    export_missing: bool = True
    verbose: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.run = Path(self.run) if self.run else None
        self.artifacts = [Path(a) for a in self.artifacts]
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise EdgesegError(f"unknown section {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
        positive = {"threads": self.threads, "batch": self.batch, "tile_runs": self.tile_runs,
                    "raster_size": self.raster_size, "block": self.block}
        bad = [f"{k}={v}" for k, v in positive.items() if v < 1]
        bad += [f"size {v}" for v in (*self.resolutions, *self.memory_sizes) if v < 16]
        if self.warmup < 0:
            bad.append(f"warmup={self.warmup}")
        if bad:
            raise EdgesegError(f"settings must be positive (sizes at least 16 px): {', '.join(bad)}")
        if not self.resolutions and "latency" in self.sections:
            raise EdgesegError("the latency section needs at least one resolution")

    @property
    def data_dir(self) -> Path:
        """The dataset folder (``--data`` or the shared Dubai set)."""
        return Path(self.data) if self.data else default_data()

    @property
    def classes_file(self) -> Path:
        """The class table (``--classes`` or the Dubai table)."""
        return Path(self.classes) if self.classes else default_classes()

    def wants(self, section: str) -> bool:
        """Whether ``section`` runs."""
        return section in self.sections
