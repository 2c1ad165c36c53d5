"""The model zoo: one :func:`build_model` entry point over two architectures and six backbones.

>>> model = build_model("mobileunet", "mobilenetv2_035", num_classes=5)  # doctest: +SKIP

Inputs are normalised outside the model, ``(pixel - 127.5) / 127.5`` for every backbone
(:data:`edgeseg.models.backbones.NORMALISATION`); outputs are probabilities at the input
resolution: softmax over K channels, or one sigmoid channel when ``num_classes == 1``.

Parts of a model (for freezing the encoder in transfer learning): layers named ``dec_*`` are
the decoder, ``head_*`` the head (1x1 conv to classes, upsampling, activation), every other
layer except the input is the encoder. :func:`encoder_layers`, :func:`decoder_layers` and
:func:`head_layers` apply that convention; it survives saving and QAT (``quant_`` prefixes are
ignored).
"""

from __future__ import annotations

from edgeseg.models.backbones import BACKBONES, NORMALISATION
from edgeseg.models.deeplabv3plus import build_deeplabv3plus
from edgeseg.models.layers import UPSAMPLING_MODES, layer_part
from edgeseg.models.mobileunet import build_mobileunet
from edgeseg.models.summary import model_summary
from firmware_bridge.errors import EdgesegError

ARCHITECTURES = {
    "deeplabv3plus": build_deeplabv3plus,
    "mobileunet": build_mobileunet,
}
"""Architecture name -> builder ``(backbone, num_classes, input_size, encoder_weights,
upsampling, **architecture options)``."""

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "NORMALISATION",
    "UPSAMPLING_MODES",
    "build_model",
    "decoder_layers",
    "encoder_layers",
    "head_layers",
    "list_models",
    "model_summary",
]


def build_model(
    arch: str,
    backbone: str,
    num_classes: int,
    input_size=(256, 256),
    encoder_weights=None,
    upsampling: str = "bilinear",
    output_stride: int = 16,
    atrous_rates=None,
    **kw,
):
    """Build a segmentation model.

    Args:
        arch: ``"deeplabv3plus"`` or ``"mobileunet"``.
        backbone: A name from :data:`BACKBONES`, e.g. ``"mobilenetv2_035"``.
        num_classes: Number of classes K (softmax), or 1 for a binary sigmoid output.
        input_size: ``(height, width)``; fixed at build time. DeepLabV3+ needs multiples of
            ``output_stride``, MobileUNet multiples of 32.
        encoder_weights: ``None`` (random), ``"imagenet"`` (Keras's cache only) or the path of
            a Keras-applications no-top ``.h5`` file (loaded by layer order).
        upsampling: ``"bilinear"``, ``"nearest"``, ``"transpose"`` or ``"unpool"`` (SegNet-style
            max-unpooling at the switches of the encoder's feature maps, see
            :func:`edgeseg.models.layers.max_unpool`).
        output_stride: DeepLabV3+ only: 8, 16 or 32.
        atrous_rates: DeepLabV3+ only: ASPP rates (default depends on the output stride).
        **kw: Further architecture options (DeepLabV3+: ``filters``, ``skip_filters``,
            ``dropout``; MobileUNet: ``decoder_filters``).

    Returns:
        A ``tf_keras`` functional Model named ``"<arch>_<backbone>"``.

    Raises:
        EdgesegError: Unknown architecture / backbone / option, invalid input size.
    """
    if arch not in ARCHITECTURES:
        raise EdgesegError(
            f"unknown architecture {arch!r}; valid architectures: {', '.join(sorted(ARCHITECTURES))}"
        )
    if arch == "deeplabv3plus":
        kw.update(output_stride=output_stride, atrous_rates=atrous_rates)
    elif atrous_rates is not None or output_stride != 16:
        raise EdgesegError(f"output_stride and atrous_rates apply to deeplabv3plus, not {arch}")
    try:
        return ARCHITECTURES[arch](
            backbone,
            num_classes,
            input_size=input_size,
            encoder_weights=encoder_weights,
            upsampling=upsampling,
            **kw,
        )
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        raise EdgesegError(f"invalid option for {arch}: {exc}") from exc


def list_models() -> list[tuple[str, str]]:
    """Return every ``(architecture, backbone)`` pair that :func:`build_model` accepts."""
    return [(a, b) for a in sorted(ARCHITECTURES) for b in BACKBONES]


def _layers_of(model, part: str) -> list:
    return [
        layer
        for layer in model.layers
        if type(layer).__name__ != "InputLayer" and layer_part(layer.name) == part
    ]


def encoder_layers(model) -> list:
    """Return the encoder (backbone) layers of a model built by :func:`build_model`."""
    return _layers_of(model, "encoder")


def decoder_layers(model) -> list:
    """Return the decoder layers (names ``dec_*``) of a model built by :func:`build_model`."""
    return _layers_of(model, "decoder")


def head_layers(model) -> list:
    """Return the head layers (names ``head_*``) of a model built by :func:`build_model`."""
    return _layers_of(model, "head")
