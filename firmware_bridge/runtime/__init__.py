"""Running a segmentation model: backends, metadata, tiling, post-processing, ``Segmenter``.

The backend table and one module per runtime (``backends``, ``backend_*``), the model's
metadata (``metadata``, ``modelspec``), tiling and post-processing, and the ``Segmenter`` that
joins them.
"""
