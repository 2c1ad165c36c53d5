"""Peak memory of ``edgeseg-run predict`` on generated scenes of growing size.

Each measurement is one child process (``python -m firmware_bridge.cli predict MODEL SCENE``)
waited for with :func:`os.wait4`, which returns that child's own resource usage: its
``ru_maxrss`` is the peak resident memory of that run alone (``getrusage(RUSAGE_CHILDREN)``
would give the largest of all children so far). The scene is streamed window by window, so
the peak should hardly grow with the scene; the report gives the ratio of the largest scene's
peak to the smallest's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.errors import EdgesegError

LOAD_ONLY = (
    "import sys; from firmware_bridge.segmenter import Segmenter, SegmenterOptions; "
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


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run ``cmd`` to completion and read its own peak RSS from :func:`os.wait4`.

    Args:
        cmd: Command line.
        env: Environment (``None``: this one).

    Returns:
        The finished run; output goes to temporary files, so a chatty child cannot block.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    return ChildRun(proc.returncode, round(maxrss_mb(usage.ru_maxrss), 1), round(seconds, 3), tail)


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
