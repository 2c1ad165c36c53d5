"""glibc's mmap threshold: edgeseg-run fixes it unless the user chose one."""

import ctypes
import os
import subprocess
import sys

import pytest

from firmware_bridge.heap import DEFAULT_THRESHOLD

PROBE = """
import ctypes, sys
from firmware_bridge.heap import fix_mmap_threshold
print(fix_mmap_threshold(int(sys.argv[1])))
"""


def glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(ctypes.CDLL("libc.so.6").gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


def probe(nbytes: int, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", PROBE, str(nbytes)], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not glibc(), reason="mallopt is glibc's (this libc has none)")
def test_sets_the_threshold_on_glibc():
    assert probe(DEFAULT_THRESHOLD) == "True"


def test_leaves_a_users_environment_setting_alone():
    assert probe(DEFAULT_THRESHOLD, MALLOC_MMAP_THRESHOLD_="131072") == "False"
    assert probe(DEFAULT_THRESHOLD, MALLOC_TRIM_THRESHOLD_="131072") == "False"


@pytest.mark.skipif(not glibc(), reason="mallopt is glibc's (this libc has none)")
def test_a_worker_sets_both_whatever_its_launcher_said():
    code = ("from firmware_bridge.heap import fix_worker_heap; print(fix_worker_heap())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"})
    assert out.stdout.strip() == "True"


def test_edgeseg_run_fixes_it_before_any_command(monkeypatch, tmp_path):
    import firmware_bridge.cli as cli

    calls = []
    monkeypatch.setattr(cli, "fix_mmap_threshold", lambda: calls.append(1))
    assert cli.main(["predict", str(tmp_path / "missing.tflite"), str(tmp_path / "x.png"),
                     "--out", str(tmp_path)]) != 0
    assert calls == [1]
