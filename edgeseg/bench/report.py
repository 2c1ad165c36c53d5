"""The benchmark's outputs: ``bench.json``, ``bench.md`` and the bar plots.

Sections that were not run this time keep their previous results from an existing
``bench.json`` in the output folder (each section records when it was measured), so parts
can be rerun one at a time.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from firmware_bridge.fsutil import atomic_path, atomic_write_bytes

SCHEMA = 1
JSON_FILE, MD_FILE = "bench.json", "bench.md"
SECTION_NAMES = ("accuracy", "latency", "throughput", "memory", "sizes")
PLOTS = {"latency": "latency.png", "throughput": "throughput.png", "memory": "memory.png"}


def read_previous(out: Path) -> dict:
    """The ``bench.json`` already in ``out`` (``{}`` when absent or unreadable)."""
    path = out / JSON_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if data.get("schema") == SCHEMA else {}


def merge(previous: dict, current: dict, ran: tuple[str, ...]) -> dict:
    """``current`` with the sections it did not run taken from ``previous``.

    A section taken over keeps the command that measured it (reports older than per-section
    commands recorded only the whole report's, which then stands for each of its sections).
    """
    merged = dict(current)
    for name, section in previous.items():
        if name in SECTION_NAMES and name not in ran and isinstance(section, dict):
            merged[name] = {"command": previous.get("command"), **section, "earlier_run": True}
    return merged


def _clean(value):
    """NaN and infinities to ``None`` (JSON has none), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_json(report: dict) -> str:
    """The report as indented JSON."""
    return json.dumps(_clean(report), indent=2) + "\n"


def model_key(label: str) -> str:
    """A row's model name without the ``@size`` that tells sizes apart."""
    return re.sub(r"@\d+$", "", label)


def _f(value, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value * scale:.{digits}f}{suffix}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _machine_md(m: dict) -> list[str]:
    ram = f", {m['ram_gb']:.0f} GiB RAM" if m.get("ram_gb") else ""
    libs = ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())
    load = m.get("load_average") or []
    return [f"Machine: {m['cpu']}, {m['cores_usable']} of {m['cores']} logical cores usable{ram}, "
            f"{m['os']} ({m['arch']}), Python {m['python']}.",
            "", f"Libraries: {libs}.", "",
            f"Load average when it started: {', '.join(str(v) for v in load)} (1/5/15 min)."]


def _accuracy_md(sec: dict) -> list[str]:
    rows = [[r["label"], r["precision"], str(r["resolution"] or "any"), _f(r["miou"], 4),
             _f(r["miou_drop"], 2), _f(r["agreement"], 2, 100, " %"), r["source"], str(r["images"])]
            for r in sec["rows"]]
    return [f"## Accuracy (validation mIoU on {sec.get('validation', 'the validation images')})",
            "", *_table(["model", "precision", "tile", "mIoU", "drop vs Keras (points)",
                         "pixels as Keras", "source", "images"], rows)]


def _tf_threads(s: dict) -> str:
    tf = s.get("tensorflow_threads")
    if not tf:
        return ""
    return f"; TensorFlow: {tf['intra_op']} intra-op, {tf['inter_op']} inter-op threads"


def _latency_md(sec: dict) -> list[str]:
    s = sec["settings"]
    sizes = sorted({r["resolution"] for r in sec["rows"]})
    by_model: dict[str, dict[int, dict]] = {}
    backend: dict[str, str] = {}
    for r in sec["rows"]:
        key = model_key(r["label"])
        by_model.setdefault(key, {})[r["resolution"]] = r
        backend[key] = r["backend"]
    head = ["model", "runtime"]
    for size in sizes:
        head += [f"{size} p50 ms", f"{size} p90 ms", f"{size} speed-up"]
    rows = []
    for key, per in by_model.items():
        row = [key, backend[key]]
        for size in sizes:
            r = per.get(size)
            row += ([_f(r["latency"]["p50"]), _f(r["latency"]["p90"]),
                     _f(r["speedup"], 2, suffix="x")] if r else ["–", "–", "–"])
        rows.append(row)
    return [f"## Per-tile latency (batch 1, {s['threads']} threads, {s['tile_runs']} timed runs "
            f"after {s['warmup']} warm-up; speed-up = TensorFlow p50 / p50{_tf_threads(s)})", "",
            *_table(head, rows)]


def _throughput_md(sec: dict) -> list[str]:
    s = sec["settings"]
    rows = [[r["label"], r["backend"], str(r["tile"]), str(r["overlap"]), _f(r["seconds"], 1),
             _f(r["mpix_per_s"], 2), _f(r["speedup"], 2, suffix="x")] for r in sec["rows"]]
    return [f"## Tiled throughput ({s['raster']}x{s['raster']} generated GeoTIFF streamed to a "
            f"mask GeoTIFF, batch {s['batch']}, {s['threads']} threads{_tf_threads(s)})", "",
            *_table(["model", "runtime", "tile", "overlap", "seconds", "MPix/s",
                     "speed-up vs TensorFlow"], rows)]


def _memory_md(sec: dict) -> list[str]:
    rows = [[f"{r['size']}x{r['size']}", _f(r["megapixels"], 1), _f(r["peak_rss_mb"], 1),
             _f(r["seconds"], 1)] for r in sec["rows"]]
    lines = [f"## Peak memory of `edgeseg-run predict` ({sec['model']}, {sec['settings']['threads']} "
             f"threads, block {sec['settings']['block']})", "",
             *_table(["scene", "MPix", "peak RSS (MiB)", "seconds"], rows)]
    if sec.get("load_only_mb") is not None:
        lines += ["", f"Opening the model alone: {sec['load_only_mb']:.1f} MiB."]
    if sec.get("ratio_largest_to_smallest") is not None:
        lines += ["", f"Largest scene's peak / smallest's: {sec['ratio_largest_to_smallest']:.3f}."]
    return lines


def _sizes_md(sec: dict) -> list[str]:
    rows = [[r["label"], ", ".join(r["files"]), _f(r["size_bytes"] / 1e6, 3),
             _f(r.get("vs_tflite_fp32"), 2, suffix="x")] for r in sec["rows"]]
    return ["## Artifact sizes", "", *_table(["artifact", "files", "MB", "vs TFLite fp32"], rows)]


SECTION_MD = {"accuracy": _accuracy_md, "latency": _latency_md, "throughput": _throughput_md,
              "memory": _memory_md, "sizes": _sizes_md}


def _commands_md(report: dict) -> list[str]:
    """The command lines behind the report's tables.

    One ``Command:`` line, or, when sections came from different runs, each command with the
    sections it measured, so that the report says how to reproduce every table.
    """
    latest = report.get("command", "edgeseg bench")
    by_command: dict[str, list[str]] = {}
    for name in SECTION_MD:
        sec = report.get(name)
        if isinstance(sec, dict):
            by_command.setdefault(sec.get("command") or latest, []).append(name)
    if len(by_command) <= 1:
        return [f"Command: `{next(iter(by_command), latest)}`"]
    return ["Commands (the sections each measured):", "",
            *(f"- `{cmd}`: {', '.join(names)}" for cmd, names in by_command.items())]


def markdown(report: dict) -> str:
    """The report as markdown: machine, one table per section, notes."""
    lines = ["# edgeseg benchmark", "", *_commands_md(report), "", *_machine_md(report["machine"])]
    if report.get("run"):
        lines += ["", f"Run: `{report['run']}`."]
    notes = list(report.get("notes", []))
    for name, render in SECTION_MD.items():
        sec = report.get(name)
        if not sec:
            continue
        lines += ["", *render(sec)] if sec.get("rows") else ["", f"## {name}: nothing measured"]
        if sec.get("earlier_run"):
            lines += ["", f"(measured {sec.get('measured_at')} by an earlier run)"]
        notes += sec.get("notes", [])
    plots = [f"![{k}]({v})" for k, v in report.get("plots", {}).items()]
    acc = report.get("accuracy") or {}
    if acc.get("overlay"):
        plots += ["", f"Validation image {acc['overlay_image']}: image, ground truth, "
                      f"{acc['overlay_model']} (tiled through firmware_bridge)", "",
                  f"![overlay]({acc['overlay']})"]
    if report.get("run_plots"):
        plots += ["", "Training curves and validation confusion matrix of the run: "
                  + ", ".join(f"`{p}`" for p in report["run_plots"])]
    if plots:
        lines += ["", "## Plots", "", *plots]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _bars(path: Path, labels: list[str], groups: dict[str, list[float | None]], ylabel: str,
          title: str, errors: dict[str, list[float | None]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(labels))
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    for i, (name, values) in enumerate(groups.items()):
        vals = [np.nan if v is None else v for v in values]
        err = None
        if errors and name in errors:
            err = [0 if e is None or v is None else max(e - v, 0) for e, v in zip(errors[name], values,
                                                                                  strict=True)]
            err = [np.zeros(len(err)), err]
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, vals, width, yerr=err, capsize=3, label=name)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(groups) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_latency(path: Path, sec: dict) -> None:
    """p50 bars per model, one colour per tile size, whiskers up to p90."""
    sizes = sorted({r["resolution"] for r in sec["rows"]})
    models = list(dict.fromkeys(model_key(r["label"]) for r in sec["rows"]))
    find = {(model_key(r["label"]), r["resolution"]): r["latency"] for r in sec["rows"]}
    p50 = {f"{s} px": [find.get((m, s), {}).get("p50") for m in models] for s in sizes}
    p90 = {f"{s} px": [find.get((m, s), {}).get("p90") for m in models] for s in sizes}
    _bars(path, models, p50, "ms per tile (p50, whisker p90)", "Per-tile latency, batch 1", p90)


def plot_throughput(path: Path, sec: dict) -> None:
    """MPix/s bars per model."""
    rows = sec["rows"]
    _bars(path, [r["label"] for r in rows], {"MPix/s": [r["mpix_per_s"] for r in rows]}, "MPix/s",
          f"Tiled throughput, {sec['settings']['raster']} px raster")


def plot_memory(path: Path, sec: dict) -> None:
    """Peak RSS bars per scene size."""
    rows = sec["rows"]
    _bars(path, [f"{r['size']} px" for r in rows], {"peak RSS": [r["peak_rss_mb"] for r in rows]},
          "MiB", f"Peak memory of edgeseg-run predict ({Path(sec['model']).name})")


PLOTTERS = {"latency": plot_latency, "throughput": plot_throughput, "memory": plot_memory}


def write_outputs(out: Path, report: dict) -> dict[str, Path]:
    """Write the plots, ``bench.json`` and ``bench.md`` into ``out``; returns what was written."""
    written = {}
    report["plots"] = {}
    for name, plotter in PLOTTERS.items():
        sec = report.get(name)
        if sec and sec.get("rows"):
            plotter(out / PLOTS[name], sec)
            report["plots"][name] = PLOTS[name]
            written[name] = out / PLOTS[name]
    atomic_write_bytes(out / JSON_FILE, to_json(report).encode())
    atomic_write_bytes(out / MD_FILE, markdown(_clean(report)).encode())
    written.update({"json": out / JSON_FILE, "markdown": out / MD_FILE})
    return written
