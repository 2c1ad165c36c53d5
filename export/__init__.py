"""Conversion of trained Keras models into self-describing device artifacts.

One function per format (``export.to_tflite``, ``to_onnx``, ``to_openvino``, ``to_carray``),
a table of formats with a thin dispatcher (:mod:`export.formats`), and a parity check of every
artifact against the Keras model through the device runtime (:mod:`export.parity`).
Dependencies point one way: ``edgeseg -> export -> firmware_bridge``; TensorFlow and the
converters are imported inside the functions that use them.
"""

from export.context import ExportContext, ExportOptions
from export.formats import FORMATS, Artifact, ExportFormat, default_formats, export_formats, parse_formats

__all__ = [
    "FORMATS",
    "Artifact",
    "ExportContext",
    "ExportFormat",
    "ExportOptions",
    "default_formats",
    "export_formats",
    "parse_formats",
]
