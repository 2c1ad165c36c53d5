"""DeepLabV3+ on a MobileNet encoder, built from depthwise-separable (atrous) blocks.

Encoder -> ASPP on the stride-``output_stride`` features -> upsample to stride 4 -> concatenate
with the projected stride-4 skip -> two depthwise-separable blocks -> head (1x1 conv to K,
upsample x4, softmax / sigmoid).

Output stride: MobileNet's strides are not altered (no dilated backbone). Output stride ``s``
takes the encoder's features at stride ``s`` (:data:`OUTPUT_STRIDES`: 8, 16 or 32) and drops
the deeper blocks; the ASPP's own atrous rates provide the large receptive field. For
MobileNetV2, OS16 reads ``block_13_expand_relu`` and OS8 ``block_6_expand_relu``. Every
backbone in the table supports 8, 16 and 32. This keeps the backbone free of dilated
convolutions (cheaper, fully int8 in TFLite) at the cost of the deepest blocks at OS8/16.

Valid input sizes: both sides multiples of ``output_stride`` and at least 32 (e.g. 256, 512
for OS16). The ASPP image-pooling branch is ``AveragePooling2D`` over the whole
``(H/s, W/s)`` feature map followed by ``UpSampling2D`` back to it (no Lambda, no
``tf.image.resize``), which fixes the input size at build time.

Upsampling ``unpool`` (:func:`edgeseg.models.layers.max_unpool`): the ASPP output goes from
stride ``output_stride`` to 4 in x2 max-unpooling steps, each at the switches of a 2x2
max-pooling of the encoder's feature map at the stride it reaches (OS16: the stride-8, then
the stride-4 features); the head upsamples bilinearly.

Quantization: the atrous branches use :func:`edgeseg.models.layers.atrous_depthwise` (a
dilated 3x3 depthwise conv written as nine shifted 1x1 depthwise taps) because a QAT model
with ordinary dilated convolutions keeps SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND in TFLite and
then fails to prepare in LiteRT's default XNNPACK delegate.
"""

from __future__ import annotations

from edgeseg.models import layers as blocks
from edgeseg.models.backbones import build_backbone
from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError

OUTPUT_STRIDES = (8, 16, 32)
DEFAULT_ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}
"""Atrous rates of the original paper for OS16 and OS8 (x2), halved for OS32."""


def aspp(x, filters: int, rates, dropout: float):
    """Atrous spatial pyramid pooling with depthwise-separable atrous branches.

    Branches: 1x1 conv; one depthwise-separable 3x3 block per atrous rate; image pooling
    (average over the whole map, 1x1 conv, nearest upsampling back). Concatenated and
    projected by a 1x1 conv.

    Args:
        x: Encoder features ``(N, h, w, C)`` with static ``h, w``.
        filters: Channels of every branch and of the projection.
        rates: Atrous rates, e.g. ``(6, 12, 18)``.
        dropout: Dropout rate after the projection (0 disables it).

    Returns:
        ``(N, h, w, filters)``.
    """
    _, keras = tf_keras()
    L = keras.layers
    h, w = int(x.shape[1]), int(x.shape[2])
    branches = [blocks.conv_bn_relu(x, filters, "dec_aspp_1x1")]
    for rate in rates:
        branches.append(blocks.sep_conv_bn_relu(x, filters, f"dec_aspp_r{rate}", dilation=rate))
    pooled = L.AveragePooling2D(pool_size=(h, w), name="dec_aspp_pool")(x)
    pooled = blocks.conv_bn_relu(pooled, filters, "dec_aspp_pool")
    branches.append(L.UpSampling2D((h, w), interpolation="nearest", name="dec_aspp_pool_up")(pooled))
    y = L.Concatenate(name="dec_aspp_concat")(branches)
    y = blocks.conv_bn_relu(y, filters, "dec_aspp_proj")
    if dropout:
        y = L.Dropout(dropout, name="dec_aspp_dropout")(y)
    return y


def build_deeplabv3plus(
    backbone: str,
    num_classes: int,
    input_size=(256, 256),
    encoder_weights=None,
    upsampling: str = "bilinear",
    output_stride: int = 16,
    atrous_rates=None,
    filters: int = 128,
    skip_filters: int = 48,
    dropout: float = 0.1,
):
    """Build DeepLabV3+.

    Args:
        backbone: Backbone name (see ``edgeseg.models.backbones.BACKBONES``).
        num_classes: K classes (softmax) or 1 (sigmoid).
        input_size: ``(height, width)``, multiples of ``output_stride``.
        encoder_weights: ``None``, ``"imagenet"`` or a weights file path.
        upsampling: ``"bilinear"``, ``"nearest"``, ``"transpose"`` or ``"unpool"`` (see the
            module docstring).
        output_stride: 8, 16 or 32 (see the module docstring).
        atrous_rates: ASPP rates; default :data:`DEFAULT_ATROUS_RATES` for the output stride.
        filters: Channels of the ASPP and decoder.
        skip_filters: Channels of the projected stride-4 skip.
        dropout: Dropout after the ASPP projection.

    Returns:
        A ``tf_keras`` Model mapping normalised images ``(N, H, W, 3)`` to probabilities.

    Raises:
        EdgesegError: Invalid output stride, input size, rates or upsampling mode.
    """
    _, keras = tf_keras()
    if output_stride not in OUTPUT_STRIDES:
        raise EdgesegError(
            f"output_stride must be one of {OUTPUT_STRIDES} for deeplabv3plus, got {output_stride}"
        )
    blocks.check_upsampling(upsampling)
    h, w = blocks.check_input_size(input_size, output_stride, "deeplabv3plus")
    rates = tuple(atrous_rates or DEFAULT_ATROUS_RATES[output_stride])
    if not rates or any(int(r) < 1 for r in rates) or len(set(rates)) != len(rates):
        raise EdgesegError(f"atrous_rates must be distinct positive integers, got {rates}")

    inputs = keras.Input((h, w, 3), name="image")
    features = build_backbone(backbone, inputs, encoder_weights)
    x = aspp(features[output_stride], filters, [int(r) for r in rates], dropout)
    switches = sorted((s for s in features if 4 <= s < output_stride), reverse=True)  # unpool
    x = blocks.upsample(x, output_stride // 4, upsampling, "dec_upsample",
                        switches=[features[s] for s in switches])
    skip = blocks.conv_bn_relu(features[4], skip_filters, "dec_skip")
    x = keras.layers.Concatenate(name="dec_concat")([x, skip])
    x = blocks.sep_conv_bn_relu(x, filters, "dec_block1")
    x = blocks.sep_conv_bn_relu(x, filters, "dec_block2")
    outputs = blocks.head(x, num_classes, 4, upsampling)
    return keras.Model(inputs, outputs, name=f"deeplabv3plus_{backbone}")
