"""What a model expects and gives, from its shapes, its metadata and the user's overrides.

The one place where a model's description is put together, field by field, in this order of
precedence: the user's options (``--mean``, ``--classes``, ...), then edgeseg's own metadata
(complete where present), then what the model's publisher recorded
(:mod:`firmware_bridge.runtime.publisher`), then defaults. Every default that stands in for
normalisation, layout, band order, output kind or class names is listed in what
:func:`resolve_model` returns, so that the commands can say what they assumed; so is tiling,
for a model of a fixed input size that neither recommends a resize nor is given ``--resize``
(images of another size are tiled at its input size, not resized to it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.backends import CHANNEL_SIZES, Backend
from firmware_bridge.runtime.metadata import MULTILABEL_KINDS, ModelMetadata, read_metadata
from firmware_bridge.runtime.publisher import PublisherMetadata, read_publisher_metadata


@dataclass(frozen=True)
class Assumed:
    """A value in effect that neither the model's metadata nor the user gave.

    Attributes:
        what: ``"normalisation"``, ``"mean"``, ``"std"``, ``"layout"``, ``"bands"``,
            ``"output"``, ``"classes"`` or ``"resize"``.
        value: The value assumed, as text.
        flags: The command-line options that set it.
    """

    what: str
    value: str
    flags: str


def resolve_metadata(path: Path, backend: Backend, opts, given: ModelMetadata | None = None
                     ) -> ModelMetadata:
    """The metadata in effect (see :func:`resolve_model`, whose first half this is)."""
    return resolve_model(path, backend, opts, given)[0]


def resolve_model(path: Path, backend: Backend, opts, given: ModelMetadata | None = None
                  ) -> tuple[ModelMetadata, list[Assumed]]:
    """The metadata in effect, and which of its values were assumed.

    Options win over edgeseg metadata (the file's, or ``given``), which is complete; a model
    without it (a foreign model) takes what its publisher recorded, then defaults: the layout
    from the input shape, one ``foreground`` sigmoid class for a one-channel output,
    ``class_i`` softmax classes otherwise, and mean and std 127.5.

    Args:
        path: The model file.
        backend: The opened backend (shapes).
        opts: :class:`~firmware_bridge.runtime.segmenter.SegmenterOptions`; set fields win.
        given: Metadata of a model that is not a file (the Keras model behind a backend);
            ``None`` reads the file's.

    Returns:
        The resolved metadata, and the defaults in it that stand in for values neither the
        model nor the options gave (empty for a model with edgeseg metadata).

    Raises:
        EdgesegError: When the classes do not fit the output channels, mean/std do not fit
            the input bands, or the model's input contradicts its own metadata.
    """
    meta = given or read_metadata(path)
    publisher = read_publisher_metadata(path) if meta is None else None
    layout = opts.layout or (meta.layout if meta else backend.layout)
    if opts.layout:
        check_layout(path, backend.input.shape, opts.layout)
    k = output_channels(backend.output.shape, layout)
    base = {} if meta else {"layout": layout}
    if meta is None:
        if k == 1:
            base.update(classes=["foreground"], output="sigmoid")
        elif k and opts.output in MULTILABEL_KINDS:  # channel c is label c + 1 (0: none)
            base.update(classes=[f"class_{i}" for i in range(1, k + 1)], output=opts.output)
        elif k:
            base.update(classes=[f"class_{i}" for i in range(k)], output="softmax")
        if publisher is not None:
            base.update({name: getattr(publisher, name) for name in ("classes", "mean", "std")
                         if getattr(publisher, name) is not None})
    if opts.scale is not None:  # --scale: --mean and --std are in scaled units, 0 and 1 unless given
        base.update(scale=opts.scale, mean=[0.0], std=[1.0])
    overrides = {"mean": opts.mean, "std": opts.std, "layout": opts.layout,
                 "classes": opts.classes, "threshold": opts.threshold, "output": opts.output}
    base.update({key: v for key, v in overrides.items() if v is not None})
    resolved = dataclasses.replace(meta or ModelMetadata(), **base)
    single = resolved.output == "sigmoid" or (k == 1 and resolved.output == "logits")
    n = len(resolved.classes)
    if resolved.output == "sigmoid" and k is not None and k > 1:
        raise EdgesegError(
            f"{path}: the model outputs {k} channels but output 'sigmoid' means one foreground "
            f"channel: for {k} independent classes (one sigmoid each, no background channel) "
            "pass --output-kind multilabel (multilabel-logits for raw logits); for one class "
            "per pixel, softmax or logits"
        )
    if resolved.output in MULTILABEL_KINDS:
        if k is not None and n not in (k, k + 1):
            raise EdgesegError(
                f"{path}: the model outputs {k} multilabel channel(s) but {n} class(es) are "
                f"configured: give {k} class names (one per channel), or {k + 1} with the "
                "name of label 0 (none) first"
            )
        single = False
    elif single and n not in (1, 2):
        raise EdgesegError(
            f"{path}: the model gives one foreground probability (one output channel) but "
            f"{n} classes are configured: give one class name (the foreground) or two "
            "(background,foreground) with --classes"
        )
    expected = 1 if single else n
    if k is not None and k != expected and resolved.output not in MULTILABEL_KINDS:
        source = (f" (the class names of its {publisher.source})"
                  if publisher and publisher.classes and opts.classes is None else "")
        raise EdgesegError(
            f"{path}: the model outputs {k} channel(s) but {n} class(es){source} "
            f"with output {resolved.output!r} are configured; fix --classes / --output-kind"
        )
    if meta is not None:
        check_against_metadata(path, backend.input.shape, meta, resolved.layout)
    channels = input_channels(backend.input.shape, resolved.layout) or resolved.channels
    for name in ("mean", "std"):
        values = getattr(resolved, name)
        if len(values) not in (1, channels):
            raise EdgesegError(f"{name} needs 1 or {channels} values, got {len(values)}")
    if meta is not None:
        return resolved, []
    return resolved, assumed_values(resolved, opts, publisher, backend.input.shape, channels)


def _numbers(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def assumed_values(resolved: ModelMetadata, opts, publisher: PublisherMetadata | None,
                   shape: tuple[int | None, ...], channels: int) -> list[Assumed]:
    """The values of a foreign model's resolved metadata that are defaults.

    Args:
        resolved: The metadata in effect.
        opts: The options it was resolved with.
        publisher: What the model's publisher recorded (``None``: nothing).
        shape: The model's input shape.
        channels: The input bands.

    Returns:
        One entry per default: normalisation (or its mean or std alone), layout (when the
        input shape does not tell), band order (models of more than one band), output kind,
        class names, and tiling (``resize tile``) for a fixed input size when the options set
        no resize and the metadata recommends none.
    """
    pub = publisher or PublisherMetadata("")
    out = []
    scaled = opts.scale is not None  # --scale: mean and std are 0 and 1 unless given
    mean_known = scaled or opts.mean is not None or pub.mean is not None
    std_known = scaled or opts.std is not None or pub.std is not None
    if not mean_known and not std_known:
        out.append(Assumed("normalisation", f"mean {_numbers(resolved.mean)} std "
                           f"{_numbers(resolved.std)}", "--mean/--std/--scale"))
    elif not mean_known or not std_known:
        name = "mean" if not mean_known else "std"
        out.append(Assumed(name, _numbers(getattr(resolved, name)), f"--{name}"))
    if opts.layout is None and not layout_is_clear(shape):
        out.append(Assumed("layout", resolved.layout, "--layout"))
    if channels > 1 and pub.bands is None:
        out.append(Assumed("bands", "RGB as stored" if channels == 3 else "as stored", "--bands"))
    if opts.output is None:
        out.append(Assumed("output", resolved.output, "--output-kind"))
    if opts.classes is None and pub.classes is None:
        names = resolved.classes
        shown = ",".join(names) if len(names) <= 4 else f"{names[0]}..{names[-1]}"
        out.append(Assumed("classes", shown, "--classes"))
    hw = shape[2:4] if resolved.layout == "NCHW" else shape[1:3]
    if (getattr(opts, "resize", None) is None and not resolved.resize and len(shape) == 4
            and None not in hw):
        out.append(Assumed("resize", "tile", "--resize"))
    return out


def layout_is_clear(shape: tuple[int | None, ...]) -> bool:
    """True when a rank-4 input shape has a band axis on one side only (NHWC or NCHW)."""
    return len(shape) == 4 and ((shape[3] in CHANNEL_SIZES) != (shape[1] in CHANNEL_SIZES))


def assumed_line(path: str | Path, assumed: list[Assumed], flags: bool = True) -> str:
    """One line saying which values were assumed for a model, and the options that set them.

    Args:
        path: The model file.
        assumed: What :func:`resolve_model` listed (not empty).
        flags: Name the options.

    Returns:
        The line, without a line end.
    """
    items = "; ".join(f"{a.what} {a.value}" + (f" ({a.flags})" if flags and a.flags else "")
                      for a in assumed)
    return f"{Path(path).name}: not in the model's metadata and not given, so assumed: {items}"


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
