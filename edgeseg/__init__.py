"""edgeseg: train light segmentation models for the edge (imports TensorFlow lazily).

Training-side code lives here; conversion in ``export``; the device runtime in
``firmware_bridge``. Dependencies point one way: edgeseg -> export -> firmware_bridge.

``edgeseg.Run`` is the engine: ``Run.train(...)`` or ``Run.open(path)``, then ``.evaluate``,
``.adapt``, ``.qat`` and ``.export``.
"""

from edgeseg.exporting import ExportOutcome, ExportRequest  # noqa: E402
from edgeseg.run import Run  # noqa: E402
from firmware_bridge import IGNORE_INDEX, __version__

__all__ = ["IGNORE_INDEX", "ExportOutcome", "ExportRequest", "Run", "__version__"]
