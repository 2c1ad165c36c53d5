"""Atomic file output: nothing half-written on failure."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from firmware_bridge.errors import EdgesegError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Args:
        path: Final destination. Its folder must exist and be writable.

    Yields:
        A temporary path in the same folder (same suffix, so writers pick the format).

    Raises:
        EdgesegError: When the destination folder does not exist or is not writable.

    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise EdgesegError(f"{folder}: output folder does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise EdgesegError(f"{folder}: output folder is not writable")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + path.suffix, dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, path)
        _remove_stale_parts(path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _remove_stale_parts(path: Path) -> None:
    """Remove partial files of ``path`` that a killed process (SIGKILL, power loss) left."""
    for stale in path.parent.glob(f".{glob.escape(path.stem)}.*.part{glob.escape(path.suffix)}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def check_output_file(path: str | Path, flag: str = "") -> Path:
    """Refuse an output file path before any work is done for it.

    Args:
        path: Where a file will be written.
        flag: The option that named it, for the message (e.g. ``"--json"``).

    Returns:
        ``path`` as a Path.

    Raises:
        EdgesegError: When it is a folder, its folder does not exist or is not writable, or
            it exists and cannot be replaced.
    """
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise EdgesegError(f"{what}: is a folder; give a file name")
    if not folder.is_dir():
        raise EdgesegError(f"{what}: the folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise EdgesegError(f"{what}: the folder {folder} is not writable")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
