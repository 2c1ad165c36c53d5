"""The benchmark behind ``edgeseg bench`` and the README's results table.

One module per section, each returning dataclass rows that go into one report:

* :mod:`~edgeseg.bench.accuracy`: validation mIoU of the Keras model and every artifact
  (from the export's ``parity.json``, else computed through ``firmware_bridge``);
* :mod:`~edgeseg.bench.speed`: per-tile latency at each size and tiled throughput on a
  generated raster, each next to the same Keras model in TensorFlow on the same tiles;
* :mod:`~edgeseg.bench.memory`: peak RSS of ``edgeseg-run predict`` on generated scenes,
  one child process per scene;
* artifact sizes and the machine (:mod:`~edgeseg.bench.machine`).

:mod:`~edgeseg.bench.runner` runs them; :mod:`~edgeseg.bench.report` writes ``bench.json``,
``bench.md`` and the plots. Nothing is estimated: what cannot be measured is left out with a
note saying why.
"""

from edgeseg.bench.options import SECTIONS, BenchOptions
from edgeseg.bench.runner import run_benchmark

__all__ = ["SECTIONS", "BenchOptions", "run_benchmark"]
