"""Keep the C heap from growing over a long streamed prediction (glibc only).

glibc serves an allocation from its heap or, above ``M_MMAP_THRESHOLD``, from a mapping of its
own that ``free`` hands back to the system at once. The threshold starts at 128 KiB and rises
(up to 32 MiB) each time such a mapping is freed, so after a few blocks the multi-MiB window,
score and accumulator arrays of a streamed prediction come from the heap, whose free space is
fragmented by the small allocations between them and is never returned. Measured (int8
MobileUNet, 256 tiles, ``--batch 4``, 16-core x86-64): peak RSS 189 MiB for a 2k scene, 211
MiB for 8k and 16k (+11 %); with the threshold fixed at 4 MiB, 184 and 191 MiB (+3.5 %).
``edgeseg-run`` fixes it at 2 MiB: the per-block arrays of a streamed prediction that vary in
size (the overlap sums, a window padded at the scene's edge) then come from mappings of their
own instead of fragmenting the heap, while the arrays of a tile or a batch (under 2 MiB) stay
on the heap, which reuses them without faulting their pages in again; the pixel windows
themselves are recycled (:class:`firmware_bridge.io.blocks.WindowBuffers`). Measured (int8
MobileUNet, 256 tiles, 1024 px blocks, 2 cores): peak 121 MiB for a 2k scene and 131 MiB for
8k, against 122 and 138 MiB at 4 MiB (docs/benchmarks.md). A library user can set
``MALLOC_MMAP_THRESHOLD_`` in the environment instead, which this module then leaves alone.

The trim threshold must go with it. Setting the mmap threshold also stops glibc from raising
the trim threshold (normally twice the mmap threshold), which then stays at 128 KiB: the top
of the heap is handed back to the system after almost every free, and the next tile's arrays
(a few hundred KiB to a few MiB) fault their pages in again. That cost 75 % per tile (int8
MobileUNet, 256 px: 2.9 ms per tile through the Segmenter, 5.2 ms with the mmap threshold
alone), so the trim threshold is fixed at twice the mmap threshold, as glibc's own rule has
it. A Dask worker starts with ``MALLOC_TRIM_THRESHOLD_=65536`` for the same reason it hurts
here (2.6 s against 5.7 s for a 4096 px scene, one thread); :func:`fix_worker_heap` sets both
thresholds whatever the environment says.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
M_TRIM_THRESHOLD = -1
DEFAULT_THRESHOLD = 2 << 20


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def _set(nbytes: int) -> bool:
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return (mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1
            and mallopt(M_TRIM_THRESHOLD, 2 * int(nbytes)) == 1)


def fix_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` and its trim threshold at twice that.

    Args:
        nbytes: Allocations at least this large get their own mapping.

    Returns:
        ``True`` when set; ``False`` off glibc (musl, macOS, Windows) or when the user set
        ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` already.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    return _set(nbytes)


def fix_worker_heap(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """:func:`fix_mmap_threshold` in a worker whose launcher set the thresholds (Dask's nanny).

    Returns:
        ``True`` when both were set; ``False`` off glibc.
    """
    return _set(nbytes)
