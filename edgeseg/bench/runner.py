"""``run_benchmark``: the sections in order, their results merged into one report."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from edgeseg.bench import report as rep
from edgeseg.bench.accuracy import (
    accuracy_section,
    load_validation,
    validation_pairs,
    write_overlay,
)
from edgeseg.bench.artifacts import ArtifactInfo, find_artifacts, read_parity
from edgeseg.bench.exporting import export_run
from edgeseg.bench.machine import machine_info
from edgeseg.bench.memory import load_only_mb, memory_section
from edgeseg.bench.options import BenchOptions, require_data
from edgeseg.bench.scenes import ensure_scene
from edgeseg.bench.speed import rows_to_dicts, throughput_section
from edgeseg.training.runs import load_run
from firmware_bridge.errors import EdgesegError

Log = Callable[[str], None]
OVERLAY = "overlay.png"
RUN_PLOTS = ("curves.png", "confusion.png")


def stderr_log(line: str) -> None:
    """Progress line on stderr (stdout carries the JSON)."""
    print(line, file=sys.stderr, flush=True)


def now() -> str:
    """UTC time in ISO 8601, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def keras_loader(run: Path):
    """Size -> the run's Keras model rebuilt at that square size (loaded anew each time)."""

    def load(size: int):

        return load_run(run, (size, size))[0]

    return load


def artifact_folders(opts: BenchOptions, log: Log) -> list[Path]:
    """The export folders to measure; exports into ``OUT/artifacts`` when none are given.

    Raises:
        EdgesegError: When there is nothing to measure and nothing to export from.
    """
    folders = list(opts.artifacts) or [opts.out / "artifacts"]
    for folder in folders:
        has = folder.is_dir() and any(a.runnable for a in find_artifacts([folder], opts.formats))
        if has:
            continue
        if not (opts.run and opts.export_missing):
            raise EdgesegError(f"{folder}: no exported models; pass --artifacts DIR (from 'edgeseg "
                               "export') or --run RUN to export them")
        log(f"[export] no artifacts in {folder}: exporting {opts.run}")
        export_run(opts, folder, opts.formats, None, log)
    return folders


def size_folders(opts: BenchOptions, artifacts: list[ArtifactInfo], log: Log) -> tuple[list[Path], list[str]]:
    """Export folders for latency sizes no artifact has (``OUT/artifacts-<size>``).

    Returns:
        ``(new folders, notes)``.
    """
    runnable = [a for a in artifacts if a.runnable]
    have = {a.resolution for a in runnable}
    formats = tuple(dict.fromkeys(a.format for a in runnable if a.format))
    new, notes = [], []
    for size in opts.resolutions:
        if size in have or None in have:
            continue
        folder = opts.out / f"artifacts-{size}"
        if folder.is_dir() and any(a.resolution == size for a in find_artifacts([folder], formats)):
            new.append(folder)
            continue
        if not (opts.run and opts.export_missing and formats):
            notes.append(f"no artifacts at {size}x{size} and none exported (needs --run and no "
                         "--no-export): that size is not measured")
            continue
        log(f"[export] exported models are fixed-size: exporting {', '.join(formats)} at {size}")
        export_run(opts, folder, formats, size, log)
        new.append(folder)
    return new, notes


def _section(rows, notes, **extra) -> dict:
    return {"measured_at": now(), "rows": rows, "notes": list(notes), **extra}


def sizes_section(artifacts: list[ArtifactInfo], run: Path | None) -> dict:
    """Bytes of every artifact, and its ratio to the TFLite float32 file of the same size."""
    fp32 = {a.resolution: a.size_bytes for a in artifacts if a.format == "tflite-fp32"}
    rows = []
    for a in artifacts:
        ref = fp32.get(a.resolution)
        rows.append({**a.to_dict(), "vs_tflite_fp32": round(a.size_bytes / ref, 3) if ref else None})
    keras_file = run / "model.keras" if run else None
    if keras_file and keras_file.is_file():
        rows.append({"label": "keras", "format": "keras", "path": str(keras_file),
                     "files": [keras_file.name], "size_bytes": keras_file.stat().st_size,
                     "resolution": None, "precision": "fp32", "runnable": False,
                     "vs_tflite_fp32": None})
    return {"measured_at": now(), "rows": rows, "notes": []}


def _memory_model(artifacts: list[ArtifactInfo], fmt: str | None) -> ArtifactInfo | None:
    wanted = [fmt] if fmt else ["tflite-qat-int8", "tflite-int8"]
    for name in wanted:
        found = [a for a in artifacts if a.runnable and name in (a.format, a.label, a.path.name)]
        if found:
            return max(found, key=lambda a: a.resolution or 0)
    return None


def _throughput_tile(opts: BenchOptions, artifacts: list[ArtifactInfo], primary: list[Path]) -> int:
    if opts.throughput_tile:
        return opts.throughput_tile
    sizes = Counter(a.resolution for a in artifacts if a.runnable and a.path.parent in primary)
    fixed = [s for s, _ in sizes.most_common() if s]
    return fixed[0] if fixed else opts.resolutions[0]


def run_benchmark(opts: BenchOptions, command: str = "edgeseg bench", log: Log = stderr_log) -> dict:
    """Run the chosen sections and write ``bench.json``, ``bench.md`` and plots into ``opts.out``.

    Args:
        opts: What to measure and how.
        command: The command line, recorded in the report.
        log: Progress lines.

    Returns:
        The report (the content of ``bench.json``).

    Raises:
        EdgesegError: For missing inputs (artifacts, run, data) with what to pass instead.
    """
    if opts.wants("accuracy") or (opts.run and opts.export_missing):
        require_data(opts.data_dir)
    opts.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    log(f"[machine] {machine.summary()}; load average {machine.load_average}")
    tf_threads = None
    if opts.run and (opts.tensorflow or opts.export_missing):
        from edgeseg.bench.keras_backend import set_tensorflow_threads

        tf_threads = set_tensorflow_threads(opts.threads)
    primary = artifact_folders(opts, log)
    notes: list[str] = []
    folders = list(primary)
    if opts.wants("latency"):
        extra, size_notes = size_folders(opts, find_artifacts(folders, opts.formats), log)
        folders += extra
        notes += size_notes
    artifacts = find_artifacts(folders, opts.formats)
    keras = keras_loader(opts.run) if opts.run and opts.tensorflow else None
    settings = {"threads": opts.threads, "batch": opts.batch, "warmup": opts.warmup,
                "tile_runs": opts.tile_runs, "tensorflow_threads": tf_threads}
    current: dict = {"schema": rep.SCHEMA, "created": now(), "command": command,
                     "run": str(opts.run) if opts.run else None,
                     "run_plots": [str(opts.run / p) for p in RUN_PLOTS
                                   if opts.run and (opts.run / p).is_file()],
                     "machine": asdict(machine),
                     "settings": settings, "artifacts": [a.to_dict() for a in artifacts],
                     "notes": notes}
    ran = tuple(s for s in opts.sections)
    if opts.wants("sizes"):
        current["sizes"] = sizes_section(artifacts, opts.run)
    if opts.wants("accuracy"):
        current["accuracy"] = accuracy(opts, artifacts, keras, log)
    if opts.wants("latency"):
        from edgeseg.bench.speed import latency_section

        rows, lnotes = latency_section(artifacts, opts.resolutions, opts.threads, opts.tile_runs,
                                       opts.warmup, keras, log)
        current["latency"] = _section(rows_to_dicts(rows), lnotes, settings={
            "threads": opts.threads, "tile_runs": opts.tile_runs, "warmup": opts.warmup,
            "resolutions": list(opts.resolutions), "batch": 1, "tensorflow_threads": tf_threads})
    if opts.wants("throughput"):
        current["throughput"] = throughput(opts, artifacts, primary, keras, log)
        current["throughput"]["settings"]["tensorflow_threads"] = tf_threads
    if opts.wants("memory"):
        current["memory"] = memory(opts, artifacts, log)
    for name in ran:
        if isinstance(current.get(name), dict):
            current[name]["command"] = command
    report = rep.merge(rep.read_previous(opts.out), current, ran)
    written = rep.write_outputs(opts.out, report)
    log(f"[done] {written['json']}, {written['markdown']}")
    return report


def accuracy(opts: BenchOptions, artifacts: list[ArtifactInfo], keras, log: Log) -> dict:
    """The accuracy section (see :mod:`edgeseg.bench.accuracy`)."""
    parities = {}
    for folder in dict.fromkeys(a.path.parent for a in artifacts):
        parity = read_parity(folder)
        if parity is not None:
            parities[folder] = parity
    data = require_data(opts.data_dir)

    def load_val():
        log(f"[accuracy] loading the validation images {opts.validation} of {data}")
        return load_validation(data, opts.classes_file, opts.validation)

    rows, notes = accuracy_section(artifacts, parities, load_val, opts.threads, keras, log)
    count = len(validation_pairs(data, opts.validation))
    for parity in parities.values():
        if parity.images != count:
            notes.append(f"{parity.path}: scored {parity.images} images, the validation set "
                         f"{opts.validation} has {count}")
    extra = {}
    shown = _memory_model(artifacts, opts.memory_format) or next(
        (a for a in artifacts if a.runnable), None)
    if shown is not None:
        stem = write_overlay(opts.out / OVERLAY, shown.path, data, opts.classes_file,
                             opts.validation, opts.threads)
        extra = {"overlay": OVERLAY, "overlay_model": shown.label, "overlay_image": stem}
        log(f"[accuracy] overlay of {stem} by {shown.label} -> {opts.out / OVERLAY}")
    return _section(rows_to_dicts(rows), notes, validation=f"{opts.validation} of {data.name}",
                    **extra)


def throughput(opts: BenchOptions, artifacts: list[ArtifactInfo], primary: list[Path], keras,
               log: Log) -> dict:
    """The throughput section on a generated ``raster_size`` scene."""
    tile = _throughput_tile(opts, artifacts, primary)
    scene = ensure_scene(opts.out / "scenes", opts.raster_size, log=log)
    rows, notes = throughput_section(artifacts, tile, scene, opts.raster_size, opts.threads,
                                     opts.batch, opts.block, keras, log)
    return _section(rows_to_dicts(rows), notes, settings={
        "raster": opts.raster_size, "tile": tile, "batch": opts.batch, "threads": opts.threads,
        "block": opts.block})


def memory(opts: BenchOptions, artifacts: list[ArtifactInfo], log: Log) -> dict:
    """The memory section with the int8 TFLite model (or ``--memory-format``)."""
    model = _memory_model(artifacts, opts.memory_format)
    settings = {"threads": opts.threads, "block": opts.block, "sizes": list(opts.memory_sizes)}
    if model is None:
        wanted = opts.memory_format or "tflite-qat-int8 or tflite-int8"
        return _section([], [f"memory: no {wanted} artifact; not measured"],
                        settings=settings, model=None)
    scenes = {s: ensure_scene(opts.out / "scenes", s, log=log) for s in opts.memory_sizes}
    rows = memory_section(model.path, scenes, opts.threads, opts.block, log)
    ratio = rows[-1].peak_rss_mb / rows[0].peak_rss_mb if len(rows) > 1 else None
    return _section(rows_to_dicts(rows), [], settings=settings, model=model.label,
                    model_path=str(model.path), load_only_mb=load_only_mb(model.path, opts.threads),
                    ratio_largest_to_smallest=round(ratio, 4) if ratio else None)
