"""What a model expects and gives, from its shapes, its metadata and the user's overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.backends import Backend
from firmware_bridge.runtime.metadata import ModelMetadata, read_metadata


def resolve_metadata(path: Path, backend: Backend, opts, given: ModelMetadata | None = None
                     ) -> ModelMetadata:
    """The metadata in effect: the file's (or ``given``, or defaults for a foreign model) plus overrides.

    A foreign model gets its layout from the input shape, one ``foreground`` sigmoid class
    for a one-channel output, and ``class_i`` softmax classes otherwise.

    Args:
        path: The model file.
        backend: The opened backend (shapes).
        opts: :class:`~firmware_bridge.runtime.segmenter.SegmenterOptions`; set fields win.
        given: Metadata of a model that is not a file (the Keras model behind a backend);
            ``None`` reads the file's.

    Returns:
        The resolved metadata.

    Raises:
        EdgesegError: When the classes do not fit the output channels, mean/std do not fit
            the input bands, or the model's input contradicts its own metadata.
    """
    meta = given or read_metadata(path)
    layout = opts.layout or (meta.layout if meta else backend.layout)
    if opts.layout:
        check_layout(path, backend.input.shape, opts.layout)
    k = output_channels(backend.output.shape, layout)
    base = {} if meta else {"layout": layout}
    if meta is None:
        if k == 1:
            base.update(classes=["foreground"], output="sigmoid")
        elif k:
            base.update(classes=[f"class_{i}" for i in range(k)], output="softmax")
    if opts.scale is not None:  # --scale: --mean and --std are in scaled units, 0 and 1 unless given
        base.update(scale=opts.scale, mean=[0.0], std=[1.0])
    overrides = {"mean": opts.mean, "std": opts.std, "layout": opts.layout,
                 "classes": opts.classes, "threshold": opts.threshold, "output": opts.output}
    base.update({key: v for key, v in overrides.items() if v is not None})
    resolved = dataclasses.replace(meta or ModelMetadata(), **base)
    single = resolved.output == "sigmoid" or (k == 1 and resolved.output == "logits")
    n = len(resolved.classes)
    if single and n not in (1, 2):
        raise EdgesegError(
            f"{path}: the model gives one foreground probability (one output channel) but "
            f"{n} classes are configured: give one class name (the foreground) or two "
            "(background,foreground) with --classes"
        )
    expected = 1 if single else n
    if k is not None and k != expected:
        raise EdgesegError(
            f"{path}: the model outputs {k} channel(s) but {n} class(es) "
            f"with output {resolved.output!r} are configured; fix --classes / --output"
        )
    if meta is not None:
        check_against_metadata(path, backend.input.shape, meta, resolved.layout)
    channels = input_channels(backend.input.shape, resolved.layout) or resolved.channels
    for name in ("mean", "std"):
        values = getattr(resolved, name)
        if len(values) not in (1, channels):
            raise EdgesegError(f"{name} needs 1 or {channels} values, got {len(values)}")
    return resolved


def check_against_metadata(path: Path, shape: tuple[int | None, ...], meta: ModelMetadata,
                           layout: str) -> None:
    """Refuse a model whose input tensor contradicts the metadata that came with it.

    Export records the bands and the input size of the model it writes; a model that takes
    something else was damaged, or carries metadata written for another model. Dynamic axes
    are not compared.

    Args:
        path: The model file, for the message.
        shape: The model's input shape (``None`` where dynamic).
        meta: The model's own metadata (before the user's overrides).
        layout: The input layout in effect.

    Raises:
        EdgesegError: When the fixed bands or input size differ from the metadata's.
    """
    if len(shape) != 4:
        return
    bands = input_channels(shape, layout)
    if bands is not None and bands != meta.channels:
        raise EdgesegError(f"{path}: the model takes {bands} band(s) but its metadata says "
                           f"{meta.channels}: the file is damaged or carries another model's "
                           "metadata")
    hw = shape[2:4] if layout == "NCHW" else shape[1:3]
    if meta.input_size is not None and None not in hw and tuple(hw) != tuple(meta.input_size):
        raise EdgesegError(f"{path}: the model's input is {hw[0]}x{hw[1]} but its metadata says "
                           f"{meta.input_size[0]}x{meta.input_size[1]}: the file is damaged or "
                           "carries another model's metadata")


MAX_PLAUSIBLE_BANDS = 64
"""More input channels than this under a layout means the layout is most likely the wrong one."""


def check_layout(path: Path, shape: tuple[int | None, ...], layout: str) -> None:
    """Refuse a ``--layout`` that the model's input shape contradicts.

    Raises:
        EdgesegError: When the input is not rank 4, or when the layout puts an implausible
            number of bands on the channel axis while the other layout would not.
    """
    if len(shape) != 4:
        raise EdgesegError(f"{path}: the input has shape {shape}; a layout needs a rank-4 input")
    other = "NCHW" if layout == "NHWC" else "NHWC"
    mine, theirs = input_channels(shape, layout), input_channels(shape, other)
    implausible = mine is None or mine > MAX_PLAUSIBLE_BANDS
    if implausible and theirs and theirs <= MAX_PLAUSIBLE_BANDS:
        raise EdgesegError(f"{path}: the input shape {tuple(shape)} is {other}, not {layout} "
                           f"({layout} would mean {mine or 'any number of'} bands): pass "
                           f"--layout {other} or leave it out")


def output_channels(shape: tuple[int | None, ...], layout: str) -> int | None:
    """Channels of an output shape (1 for a rank-3 ``N,H,W`` map; ``None`` when dynamic)."""
    if len(shape) == 3:
        return 1
    return shape[-1] if layout == "NHWC" else shape[1]


def input_channels(shape: tuple[int | None, ...], layout: str) -> int | None:
    """Bands of a rank-4 input shape (``None`` when dynamic)."""
    return shape[3] if layout == "NHWC" else shape[1]
