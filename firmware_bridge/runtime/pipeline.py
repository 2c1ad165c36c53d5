"""Overlap the stages of tiled inference so that the runtime is never waiting on Python.

Two bounded pipelines, both built on one-thread executors (numpy, GDAL and the runtimes
release the GIL while they work, so the stages run at the same time):

* :func:`run_ahead`, inside one region: while the model runs batch ``i`` on the model thread,
  the calling thread post-processes batch ``i - 1`` and prepares batch ``i + 1``;
* :func:`stream`, over the blocks of a raster: block ``i + 1`` is read and block ``i - 1``
  written while block ``i`` is predicted.

At most ``depth`` items wait between two stages, so memory stays bounded whatever the number
of items. Order is kept, so the results equal the sequential ones exactly. An exception in
any stage cancels what is queued and is raised in the calling thread, as the sequential code
would raise it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")

DEFAULT_DEPTH = 2
"""Batches of tiles prepared ahead of the model (:func:`run_ahead`)."""

BLOCK_DEPTH = 1
"""Blocks read ahead of, and written behind, the one being predicted (:func:`stream`).

Reading or writing a block takes a small part of the time its tiles take in the model, so one
block ahead keeps the model busy; every block more in flight holds one more window of pixels
(about 4 MB for a 1024 px block of three bands) for no speed."""


def _drain(pending: Iterable[Future]) -> None:
    """Cancel queued work and wait for the running item (it may hold a runtime)."""
    futures = list(pending)
    for f in futures:
        f.cancel()
    for f in futures:
        if not f.cancelled():
            try:
                f.result()
            except BaseException:  # noqa: BLE001, S110 - the first error is the one raised
                pass


def run_ahead(items: Iterable[T], prepare: Callable[[T], U], run: Callable[[U], V],
              worker: ThreadPoolExecutor | None, depth: int = DEFAULT_DEPTH
              ) -> Iterator[tuple[T, V]]:
    """``(item, run(prepare(item)))`` in order, with ``run`` on ``worker`` ahead of the caller.

    Args:
        items: What to process (e.g. batches of tile boxes).
        prepare: Runs in the calling thread (e.g. slicing and normalising the tiles).
        run: Runs on ``worker`` (e.g. the runtime's inference call), one item at a time.
        worker: A one-thread executor; ``None`` runs everything in the calling thread.
        depth: Items prepared or running ahead of the one being yielded.

    Yields:
        Each item with its result, in the order of ``items``.
    """
    if worker is None:
        for item in items:
            yield item, run(prepare(item))
        return
    source = iter(items)
    pending: deque[tuple[T, Future]] = deque()
    try:
        for item in source:
            pending.append((item, worker.submit(run, prepare(item))))
            if len(pending) > depth:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        _drain(f for _, f in pending)


def stream(items: Iterable[T], read: Callable[[T], U], compute: Callable[[T, U], V],
           write: Callable[[T, V], None], pipelined: bool = True, depth: int = BLOCK_DEPTH
           ) -> None:
    """``write(item, compute(item, read(item)))`` for every item: reads ahead, writes behind.

    Args:
        items: Work units in output order (e.g. a raster's blocks).
        read: Runs on a reader thread, up to ``depth`` items ahead.
        compute: Runs in the calling thread.
        write: Runs on a writer thread, in order, at most ``depth`` items behind.
        pipelined: False runs the three in turn in the calling thread (the reference).
        depth: Items in flight between two stages.

    Raises:
        Whatever a stage raised, in the calling thread; later items are not written.
    """
    if not pipelined:
        for item in items:
            write(item, compute(item, read(item)))
        return
    with ThreadPoolExecutor(1, "edgeseg-read") as reader, \
            ThreadPoolExecutor(1, "edgeseg-write") as writer:
        writes: deque[Future] = deque()
        try:
            for item, data in run_ahead(items, lambda x: x, read, reader, depth):
                writes.append(writer.submit(write, item, compute(item, data)))
                while writes and (writes[0].done() or len(writes) > depth):
                    writes.popleft().result()
            while writes:
                writes.popleft().result()
        finally:
            _drain(writes)
