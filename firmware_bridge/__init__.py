"""edgeseg's device runtime: numpy plus one inference runtime, never TensorFlow.

Submodules:
    imageio   -- read images / rasters (PNG, JPEG, TIFF, GeoTIFF) and write masks.
    classes   -- the class table (name, colour, ignore) and colour <-> index masks.
    metrics   -- the one metric core: streaming confusion matrix -> IoU, Dice, ...
    metadata  -- the self-describing metadata that every exported artifact carries.
"""

__version__ = "0.1.0"

IGNORE_INDEX = 255
"""Label value for pixels that no loss or metric counts."""
