"""Quantization-aware training, activation ranges, the QAT model's storage, int8 error report.

Wrapping a model for QAT (``qat``), annotations for what tfmot lacks (``annotate``), activation
ranges measured on the float model (``ranges``), storing the QAT model (``store``) and the
per-layer int8 error report (``debug``).
"""
