"""Inputs given as files, folders or globs, expanded to a sorted list of files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from firmware_bridge.errors import EdgesegError

GLOB_CHARS = frozenset("*?[")


def expand_inputs(inputs: Sequence[str | Path], suffixes: Sequence[str]) -> list[Path]:
    """Files named by ``inputs``: files as given, folders' files with ``suffixes``, globs expanded.

    Args:
        inputs: Paths, folders (not recursive) or glob patterns (``**`` recurses).
        suffixes: File suffixes taken from folders and globs, lower case (``(".tif", ...)``).

    Returns:
        Files in the order given (each folder's and glob's sorted); a file named twice stays
        twice, for the caller to refuse.

    Raises:
        EdgesegError: For a folder or a glob that names no such file.
    """
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        if GLOB_CHARS & set(text):
            hits = [Path(p) for p in sorted(glob.glob(text, recursive=True))
                    if Path(p).suffix.lower() in suffixes and Path(p).is_file()]
            if not hits:
                raise EdgesegError(f"{text}: the pattern matches no {'/'.join(suffixes)} file")
            found.extend(hits)
        elif Path(text).is_dir():
            hits = sorted(p for p in Path(text).iterdir()
                          if p.suffix.lower() in suffixes and p.is_file())
            if not hits:
                raise EdgesegError(f"{text}: the folder holds no {'/'.join(suffixes)} file")
            found.extend(hits)
        else:
            found.append(Path(text))
    return found
