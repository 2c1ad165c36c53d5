"""Peak memory of ``edgeseg-run predict`` on generated scenes of growing size.

Each measurement is one process (``python -m firmware_bridge.cli predict MODEL SCENE``), and
its peak resident memory is its own ``ru_maxrss`` from :func:`os.wait4` (not
``getrusage(RUSAGE_CHILDREN)``, which gives the largest of all children so far). It is started
through a small launcher process rather than forked from the benchmark itself: Linux carries
the pre-``exec`` memory of a forked child into its ``ru_maxrss``, and a benchmark holding
TensorFlow would make every child look as large as itself. The launcher (a bare Python, a few
MiB) forks the measured process and reports what ``wait4`` says about it.

The scene is streamed window by window, so the peak should hardly grow with the scene; the
report gives the ratio of the largest scene's peak to the smallest's.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.errors import EdgesegError

LOAD_ONLY = (
    "import sys; from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions; "
    "Segmenter(sys.argv[1], options=SegmenterOptions(threads=int(sys.argv[2])))"
)


@dataclass
class ChildRun:
    """One finished child process: exit code, peak RSS (MiB), wall seconds, stderr tail."""

    returncode: int
    peak_rss_mb: float
    seconds: float
    stderr: str


@dataclass
class MemoryRow:
    """Peak memory of predicting one ``size x size`` scene."""

    size: int
    megapixels: float
    peak_rss_mb: float
    seconds: float


def maxrss_mb(ru_maxrss: int) -> float:
    """``ru_maxrss`` in MiB (KiB on Linux, bytes on macOS)."""
    return ru_maxrss / 2**20 if sys.platform == "darwin" else ru_maxrss / 2**10


LAUNCHER = """
import os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {time.perf_counter() - t0}")
"""
"""Runs ``argv[2:]``, writes ``exit-code ru_maxrss seconds`` of that process to ``argv[1]``."""


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run ``cmd`` to completion through the launcher and read its own peak RSS.

    Args:
        cmd: Command line.
        env: Environment (``None``: this one).

    Returns:
        The finished run; output goes to temporary files, so a chatty child cannot block.

    Raises:
        EdgesegError: When the launcher itself fails.
    """
    with tempfile.TemporaryDirectory(prefix="edgeseg-rss-") as tmp:
        result, err_path = Path(tmp) / "result", Path(tmp) / "stderr"
        with open(err_path, "wb") as err:
            launcher = subprocess.run([sys.executable, "-c", LAUNCHER, str(result), *cmd],
                                      stdout=subprocess.DEVNULL, stderr=err, env=env, check=False)
        tail = err_path.read_bytes()[-2000:].decode(errors="replace")
        if launcher.returncode != 0 or not result.is_file():
            raise EdgesegError(f"measuring {cmd[0]} failed (launcher exit {launcher.returncode}): "
                               f"{tail.strip()}")
        code, maxrss, seconds = result.read_text().split()
    return ChildRun(int(code), round(maxrss_mb(int(maxrss)), 1), round(float(seconds), 3), tail)


def predict_command(model: Path, scene: Path, out_dir: Path, threads: int, block: int) -> list[str]:
    """``edgeseg-run predict`` as run by this Python interpreter."""
    return [sys.executable, "-m", "firmware_bridge.cli", "predict", str(model), str(scene),
            "--out", str(out_dir), "--quiet", "--threads", str(threads), "--block", str(block)]


def _checked(run: ChildRun, what: str) -> ChildRun:
    if run.returncode != 0:
        raise EdgesegError(f"{what} failed with exit code {run.returncode}: {run.stderr.strip()}")
    return run


def load_only_mb(model: Path, threads: int) -> float:
    """Peak RSS of a child that only opens the model (the runtime's fixed cost), MiB."""
    run = run_child([sys.executable, "-c", LOAD_ONLY, str(model), str(threads)])
    return _checked(run, f"opening {model}").peak_rss_mb


def memory_section(model: Path, scenes: dict[int, Path], threads: int, block: int,
                   log: Callable[[str], None] = print) -> list[MemoryRow]:
    """Peak RSS of ``edgeseg-run predict MODEL SCENE`` per scene, one child each.

    Args:
        model: The model file (the int8 TFLite in the benchmark).
        scenes: Scene edge -> GeoTIFF.
        threads: Runtime threads.
        block: Streaming block edge.
        log: Progress lines.

    Returns:
        One row per scene, smallest first.

    Raises:
        EdgesegError: When a prediction fails (with its error output).
    """
    rows = []
    for size in sorted(scenes):
        with tempfile.TemporaryDirectory(prefix="edgeseg-bench-mem-") as tmp:
            cmd = predict_command(model, scenes[size], Path(tmp), threads, block)
            run = _checked(run_child(cmd), f"edgeseg-run predict on the {size}px scene")
        rows.append(MemoryRow(size, round(size * size / 1e6, 3), run.peak_rss_mb, run.seconds))
        log(f"[memory] {size}x{size}: peak RSS {run.peak_rss_mb:.1f} MiB ({run.seconds:.1f} s)")
    return rows
