"""Keep the C heap from growing over a long streamed prediction (glibc only).

glibc serves an allocation from its heap or, above ``M_MMAP_THRESHOLD``, from a mapping of its
own that ``free`` hands back to the system at once. The threshold starts at 128 KiB and rises
(up to 32 MiB) each time such a mapping is freed, so after a few blocks the multi-MiB window,
score and accumulator arrays of a streamed prediction come from the heap, whose free space is
fragmented by the small allocations between them and is never returned. Measured (int8
MobileUNet, 256 tiles, ``--batch 4``, 16-core x86-64): peak RSS 189 MiB for a 2k scene, 211
MiB for 8k and 16k (+11 %); with the threshold fixed at 4 MiB, 184 and 191 MiB (+3.5 %).
``edgeseg-run`` fixes it at start-up; a library user can set ``MALLOC_MMAP_THRESHOLD_`` in the
environment instead, which this module then leaves alone.

The trim threshold goes with it (glibc's own rule: twice the mmap threshold). A Dask worker
starts with ``MALLOC_TRIM_THRESHOLD_=65536``, so that the heap top is handed back to the system
after every free; the blocks' mid-size arrays then fault their pages in again at every
allocation, which halved the tiled path's speed in a worker (int8 MobileUNet, 4096 px scene,
one thread: 2.6 s in one process, 5.7 s with that setting). :func:`fix_worker_heap` undoes it
in the worker process.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
DEFAULT_THRESHOLD = 4 << 20


def fix_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (which also stops its dynamic rise).

    Args:
        nbytes: Allocations at least this large get their own mapping.

    Returns:
        ``True`` when set; ``False`` off glibc (musl, macOS, Windows) or when the user set
        ``MALLOC_MMAP_THRESHOLD_`` already.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1


M_TRIM_THRESHOLD = -1  # glibc <malloc.h>


def fix_worker_heap(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix the mmap threshold at ``nbytes`` and the trim threshold at twice that (glibc only).

    For worker processes whose launcher set a tiny trim threshold (Dask's nanny sets 64 KiB).

    Returns:
        ``True`` when both were set; ``False`` off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return (mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1
            and mallopt(M_TRIM_THRESHOLD, 2 * int(nbytes)) == 1)
