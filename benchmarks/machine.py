"""The machine a benchmark ran on, as every table states it."""

from __future__ import annotations

import os
import platform
import subprocess


def cpu() -> str:
    """``lscpu`` model name, the core count and the ISA flags that decide float and int8 speed.

    Returns:
        e.g. ``"AMD EPYC 7B13, 2 cores, avx2 fma"`` (AVX2/FMA, AVX-512, VNNI and AMX flags only).
    """
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), platform.processor() or "?")
    flags = next((line.split(":", 1)[1].split() for line in out.splitlines()
                  if line.startswith("Flags")), [])
    isa = sorted({f for f in flags
                  if f in ("avx2", "fma") or f.startswith(("avx512", "amx")) or "vnni" in f})
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa) or 'no AVX2'}"
