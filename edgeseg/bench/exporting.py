"""Exports the benchmark makes itself: when no artifacts are given, or a size has none.

Exported models are fixed-size (dilated and transposed convolutions refuse
``resize_tensor_input``), so measuring at another tile size needs an export at that size.
The export is the engine's (:meth:`edgeseg.Run.export`): the run's Keras model (and QAT model)
rebuilt at the size with the same weights, every format calibrated on crops of the training
images, then the parity check that writes ``parity.json``, which the accuracy section reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgeseg.bench.options import BenchOptions, require_data
from edgeseg.exporting import ExportRequest
from edgeseg.run import Run
from export.formats import format_of
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.backends import model_suffixes


def export_run(opts: BenchOptions, folder: Path, formats: tuple[str, ...] | None, size: int | None,
               log: Callable[[str], None]) -> list[Path]:
    """Export ``opts.run`` into ``folder`` with the engine, parity included.

    Args:
        opts: Benchmark options (run, data, classes, validation pattern, threads).
        folder: Output folder.
        formats: Format names (``None``: the export's defaults).
        size: Square input size (``None``: the run's own).
        log: Progress lines.

    Returns:
        The model files written.

    Raises:
        EdgesegError: Without a run or data, or when a conversion fails (the folder is then
            left as it was). A parity failure is logged, not raised: the benchmark reports
            the numbers.
    """
    if opts.run is None:
        raise EdgesegError("exporting needs --run RUN")
    data = require_data(opts.data_dir)
    request = ExportRequest(formats=list(formats) if formats else "all", data=data,
                            classes=opts.classes_file, val_pattern=opts.validation,
                            input_size=size, threads=opts.threads, keep_failing=True)
    log(f"[export] {opts.run} -> {folder} ({', '.join(formats) if formats else 'default formats'}"
        f"{f', {size} px' if size else ''})")
    outcome = Run.open(opts.run).export(folder, request, log=log)
    if not outcome.ok:
        log(f"[export] {folder}: an artifact missed its parity threshold (see parity.json)")
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and (format_of(p) or p.suffix in model_suffixes()))
