"""Atomic file output: nothing half-written on failure, and one line naming the file when a write fails."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from firmware_bridge.errors import EdgesegError


def write_error(path: str | Path, exc: BaseException) -> EdgesegError:
    """The one-line error for a failed write of ``path`` (disk full, read-only, no permission...).

    Args:
        path: The file that could not be written (its final name, not a temporary one).
        exc: What the writer raised: an ``OSError`` with an errno, or a library's error
            without one (GDAL reports a full disk only as a failed write).

    Returns:
        The error to raise; its message names ``path`` and says why.
    """
    path = Path(path)
    if isinstance(exc, OSError) and exc.errno in errno.errorcode and exc.strerror:
        reason = exc.strerror
    elif _no_space(path.parent):
        reason = os.strerror(errno.ENOSPC)
    else:
        reason = root_cause(exc)
    return EdgesegError(f"{path}: cannot write ({reason})")


def root_cause(exc: BaseException) -> str:
    """The message of the first exception in ``exc``'s chain of causes.

    rasterio raises ``Write failed. See previous exception for details.`` from GDAL's own
    message; the latter is the one that says what went wrong.

    Args:
        exc: An exception, possibly raised ``from`` another.

    Returns:
        The innermost cause's message (its type's name when it has none).
    """
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _no_space(folder: Path) -> bool:
    """Whether the file system holding ``folder`` has no block left for this user."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into the one-line error naming ``path``.

    Args:
        path: The file the block writes (or renames into place).

    Yields:
        Nothing; the block runs unchanged.

    Raises:
        EdgesegError: For any ``OSError`` raised in the block (see :func:`write_error`).
    """
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from exc


def new_part(path: str | Path) -> Path:
    """Create an empty temporary file beside ``path`` that :func:`publish` renames onto it.

    Args:
        path: Final destination. Its folder must exist and be writable.

    Returns:
        The temporary path (hidden, same suffix, so writers pick the format).

    Raises:
        EdgesegError: When the destination folder does not exist, is not writable, or the
            file cannot be created there, or ``path`` exists and is not a regular file (a
            folder or a device is never replaced).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise EdgesegError(f"{folder}: output folder does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise EdgesegError(f"{folder}: output folder is not writable")
    if path.exists() and not path.is_file():
        raise EdgesegError(f"{path}: exists and is not a regular file (a folder or a device): "
                           "move it away or write elsewhere")
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + path.suffix,
                                   dir=folder)
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, path: str | Path) -> None:
    """Give a finished temporary file the usual mode and rename it onto ``path``.

    Args:
        tmp: The file from :func:`new_part`, completely written and closed.
        path: Its final name; an existing file of that name is replaced.

    Raises:
        EdgesegError: When the rename fails (``path`` is a folder, the disk is read-only...).
    """
    path = Path(path)
    with writing(path):
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    _remove_stale_parts(path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Args:
        path: Final destination. Its folder must exist and be writable.

    Yields:
        A temporary path in the same folder (same suffix, so writers pick the format).

    Raises:
        EdgesegError: When the destination folder does not exist or is not writable, or
            when writing fails (an ``OSError`` in the block: disk full, quota, read-only
            file system...); the message names ``path`` and the temporary file is removed.
    """
    path = Path(path)
    tmp_path = new_part(path)
    try:
        with writing(path):
            yield tmp_path
        publish(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


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
        EdgesegError: When it is a folder or another file that is not a regular one (a
            device is never replaced), its folder does not exist or is not writable.
    """
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise EdgesegError(f"{what}: is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise EdgesegError(f"{what}: exists and is not a regular file (a device, a pipe...); "
                           "give a file name")
    if not folder.is_dir():
        raise EdgesegError(f"{what}: the folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise EdgesegError(f"{what}: the folder {folder} is not writable")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
