"""MobileUNet: a MobileNet encoder whose skips at 1/2 ... 1/16 feed a light U-Net decoder.

The stride-32 features are the bottom of the U, projected by a 1x1 conv to the first stage's
channels (MobileNetV2 ends in 1280 channels at every alpha). Each decoder stage upsamples x2
(a transposed conv also sets the stage's channel count), concatenates
the encoder skip at that stride and applies one depthwise-separable block (DW 3x3 + BN + ReLU,
1x1 conv + BN + ReLU) with a shrinking channel count. After the stride-2 stage the head
upsamples x2 to the input resolution.

``unpool`` (SegNet-style max-unpooling, :func:`edgeseg.models.layers.max_unpool`): each stage
projects its input by a 1x1 conv to the channels of the encoder skip it is about to meet and
writes every value at the position of its 2x2 window where that skip is largest (the switches
of a 2x2 max-pooling of the skip), zero elsewhere; the skip is then concatenated as in the
other modes. The head, with no encoder feature map at the input resolution, upsamples
bilinearly.

Valid input sizes: both sides multiples of 32 and at least 32 (e.g. 64, 96, 256, 512), so that
every skip lines up with the upsampled decoder tensor.
"""

from __future__ import annotations

from edgeseg.models import layers as blocks
from edgeseg.models.backbones import build_backbone
from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError

DEFAULT_DECODER_FILTERS = (128, 64, 48, 32)
"""Channels of the decoder stages at strides 16, 8, 4 and 2."""


def build_mobileunet(
    backbone: str,
    num_classes: int,
    input_size=(256, 256),
    encoder_weights=None,
    upsampling: str = "bilinear",
    decoder_filters=DEFAULT_DECODER_FILTERS,
):
    """Build a MobileUNet.

    Args:
        backbone: Backbone name (see ``edgeseg.models.backbones.BACKBONES``).
        num_classes: K classes (softmax) or 1 (sigmoid).
        input_size: ``(height, width)``, multiples of 32.
        encoder_weights: ``None``, ``"imagenet"`` or a weights file path.
        upsampling: ``"bilinear"``, ``"nearest"``, ``"transpose"`` or ``"unpool"`` (see the
            module docstring).
        decoder_filters: Four channel counts, for the stages at strides 16, 8, 4, 2.

    Returns:
        A ``tf_keras`` Model mapping normalised images ``(N, H, W, 3)`` to probabilities.

    Raises:
        EdgesegError: Invalid input size, decoder filters or upsampling mode.
    """
    _, keras = tf_keras()
    blocks.check_upsampling(upsampling)
    h, w = blocks.check_input_size(input_size, 32, "mobileunet")
    decoder_filters = tuple(int(f) for f in decoder_filters)
    if len(decoder_filters) != 4 or min(decoder_filters) < 1:
        raise EdgesegError(
            f"decoder_filters must be 4 positive channel counts (strides 16, 8, 4, 2), "
            f"got {decoder_filters}"
        )

    inputs = keras.Input((h, w, 3), name="image")
    features = build_backbone(backbone, inputs, encoder_weights)
    x = blocks.conv_bn_relu(features[32], decoder_filters[0], "dec_bottom")
    for stride, filters in zip((16, 8, 4, 2), decoder_filters, strict=True):
        x = blocks.upsample(x, 2, upsampling, f"dec_s{stride}_upsample", filters=filters,
                            switches=[features[stride]])
        x = keras.layers.Concatenate(name=f"dec_s{stride}_concat")([x, features[stride]])
        x = blocks.sep_conv_bn_relu(x, filters, f"dec_s{stride}")
    outputs = blocks.head(x, num_classes, 2, upsampling)
    return keras.Model(inputs, outputs, name=f"mobileunet_{backbone}")
