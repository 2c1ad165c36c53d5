"""Tiled inference over an archive of scenes on a Dask cluster (the ``[cluster]`` extra).

* :mod:`~firmware_bridge.cluster.worker` -- what runs on a worker: one unit of blocks of one
  scene, with the model opened once per worker thread and kept;
* :mod:`~firmware_bridge.cluster.connect` -- reaching the scheduler and waiting for workers,
  each within a limit, with one-line errors that name the address;
* :mod:`~firmware_bridge.cluster.archive` -- :func:`predict_many`: plans the units, sends them
  to a ``distributed.Client`` (a ``LocalCluster`` it starts, or the user's), and writes each
  scene's mask block by block as units come back, renaming it when complete;
* :mod:`~firmware_bridge.cluster.bench` -- throughput with 1, 2, ... workers against the
  single-process path.

The masks equal those of the single-process ``edgeseg-run predict`` pixel for pixel: every
block is predicted from its own context window (:mod:`firmware_bridge.io.blocks`).
"""

from firmware_bridge.cluster.archive import ArchiveReport, predict_many

__all__ = ["ArchiveReport", "predict_many"]
