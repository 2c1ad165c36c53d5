"""edgeseg: train light segmentation models for the edge (imports TensorFlow lazily).

Training-side code lives here; conversion in ``export``; the device runtime in
``firmware_bridge``. Dependencies point one way: edgeseg -> export -> firmware_bridge.
"""

from firmware_bridge import IGNORE_INDEX, __version__

__all__ = ["IGNORE_INDEX", "__version__"]
