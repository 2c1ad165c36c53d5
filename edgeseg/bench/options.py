"""What a benchmark run measures and with which settings (:class:`BenchOptions`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.errors import EdgesegError

SECTIONS = ("accuracy", "latency", "throughput", "memory", "sizes")
"""Sections in the order they run; ``machine`` facts are always collected."""

DATA_ENV, CLASSES_ENV = "EDGESEG_DATA", "EDGESEG_CLASSES"
"""Environment variables that give the dataset folder and its class table when the options do not."""


def require_data(path: Path | None) -> Path:
    """Return ``path`` when it is a dataset folder.

    Raises:
        EdgesegError: Saying how to give one (``--data`` or ``$EDGESEG_DATA``).
    """
    if path is None:
        raise EdgesegError(f"this needs a dataset: pass --data DIR --classes FILE (or set {DATA_ENV} "
                           f"and {CLASSES_ENV})")
    if not (path / "images").is_dir():
        raise EdgesegError(f"{path}: no dataset here (needs images/ and masks/); pass --data DIR "
                           f"(or set {DATA_ENV})")
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
        val_pattern: Validation images (stem globs, comma-separated; ``None``: the run's).
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
    val_pattern: str | None = None
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
    def data_dir(self) -> Path | None:
        """The dataset folder (``--data`` or ``$EDGESEG_DATA``), ``None`` without either."""
        given = self.data or os.environ.get(DATA_ENV)
        return Path(given) if given else None

    @property
    def classes_file(self) -> Path:
        """The class table (``--classes`` or ``$EDGESEG_CLASSES``).

        Raises:
            EdgesegError: Without either.
        """
        given = self.classes or os.environ.get(CLASSES_ENV)
        if not given:
            raise EdgesegError(f"the dataset needs its class table: pass --classes FILE (or set "
                               f"{CLASSES_ENV})")
        return Path(given)

    @property
    def validation(self) -> str:
        """The validation stems: ``--val-pattern``, else the run's own.

        Raises:
            EdgesegError: With neither.
        """
        if self.val_pattern:
            return self.val_pattern
        if self.run is not None and (self.run / "config.json").is_file():
            import json

            pattern = json.loads((self.run / "config.json").read_text())["config"].get("val_pattern")
            if pattern:
                return pattern
        raise EdgesegError("which images validate? pass --val-pattern GLOB (or --run RUN to use its own)")

    def wants(self, section: str) -> bool:
        """Whether ``section`` runs."""
        return section in self.sections
