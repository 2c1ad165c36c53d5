"""Exports the benchmark makes itself: when no artifacts are given, or a size has none.

Exported models are fixed-size (dilated and transposed convolutions refuse
``resize_tensor_input``), so measuring at another tile size needs an export at that size.
The export runs as ``edgeseg export RUN --input-size N`` would: the run's Keras model (and QAT
model) rebuilt at the size with the same weights, every format through the export dispatcher
(:func:`export.formats.export_formats`) calibrated on crops of the training images, then the
parity check that writes ``parity.json``, which the accuracy section reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgeseg.bench.options import BenchOptions, require_data
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.backends import model_suffixes


def export_run(opts: BenchOptions, folder: Path, formats: tuple[str, ...] | None, size: int | None,
               log: Callable[[str], None]) -> list[Path]:
    """Export ``opts.run`` into ``folder`` exactly as ``edgeseg export`` does, parity included.

    The export command (:mod:`edgeseg.commands.export`) is called in this process: it loads
    the run (and its QAT model when ``edgeseg qat`` made one) at ``size``, calibrates on
    training crops, writes every format through the dispatcher, and writes ``parity.json``.
    Its table goes to stderr, keeping stdout for the benchmark's JSON.

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
    import contextlib
    import sys

    from edgeseg.cli import build_parser

    if opts.run is None:
        raise EdgesegError("exporting needs --run RUN")
    data = require_data(opts.data_dir)
    argv = ["export", str(opts.run), "--out", str(folder), "--data", str(data),
            "--classes", str(opts.classes_file), "--val-pattern", opts.validation,
            "--threads", str(opts.threads), "--formats", ",".join(formats) if formats else "all",
            "--keep-failing"]
    if size:
        argv += ["--input-size", str(size)]
    log(f"[export] edgeseg {' '.join(argv)}")
    args = build_parser().parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        code = args.func(args)
    if code:
        log(f"[export] {folder}: an artifact missed its parity threshold (see parity.json)")
    return sorted(p for p in folder.iterdir() if p.suffix in (*model_suffixes(), ".cc"))
