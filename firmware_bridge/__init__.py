"""edgeseg's device runtime: numpy plus one inference runtime, never TensorFlow.

Packages and modules:
    runtime/  -- the backend table and one module per runtime, model metadata, tiling,
                 post-processing, and ``Segmenter``, which runs any model on any backend.
    io/       -- images and rasters (PNG, JPEG, TIFF, GeoTIFF), class tables, image/mask pairs.
    serve/    -- the frame server: wire protocol, server loop, listeners, C client.
    metrics   -- the one metric core: streaming confusion matrix -> IoU, Dice, ...
    evaluate  -- the one scoring loop: a Segmenter over images with truth.
    commands/ -- ``edgeseg-run`` sub-commands (argument parsing only).
"""

__version__ = "0.1.0"

IGNORE_INDEX = 255
"""Label value for pixels that no loss or metric counts."""
