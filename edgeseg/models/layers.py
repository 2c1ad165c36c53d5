"""Building blocks shared by the architectures, chosen so that QAT and int8 TFLite accept them.

Only layers that tensorflow-model-optimization quantizes out of the box are used: Conv2D /
DepthwiseConv2D + BatchNormalization + ReLU (folded by tfmot), UpSampling2D, Conv2DTranspose
with a bias and no batch-norm after it, AveragePooling2D, Concatenate, Activation, and for the
atrous taps ZeroPadding2D, Cropping2D and two-input Add. No Lambda, no ``tf.image.resize``, no
dilated convolution (see :func:`atrous_depthwise`). The one layer of edgeseg's own,
``MaxUnpool2D`` (:func:`max_unpool`), is weightless and made of operators that TFLite runs in
int8; QAT quantizes its output (:mod:`edgeseg.quantization.annotate`).

Layer-name convention (what training uses to freeze the encoder): every layer an architecture
adds is named ``dec_*`` (decoder) or ``head_*`` (classifier head); all other layers, apart from
the input, belong to the encoder. tfmot's QAT wrappers prefix names with ``quant_``, which
:func:`layer_part` strips.
"""

from __future__ import annotations

from edgeseg.keras_layers import _CUSTOM_LAYERS, UNPOOL_WINDOW
from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError

UPSAMPLING_MODES = ("bilinear", "nearest", "transpose", "unpool")
DECODER_PREFIX = "dec_"
HEAD_PREFIX = "head_"


def layer_part(name: str) -> str:
    """Return ``"decoder"``, ``"head"`` or ``"encoder"`` for a layer name (see module doc)."""
    if name.startswith("quant_"):
        name = name[len("quant_") :]
    if name.startswith(DECODER_PREFIX):
        return "decoder"
    if name.startswith(HEAD_PREFIX):
        return "head"
    return "encoder"


def check_upsampling(mode: str) -> str:
    """Validate an upsampling mode.

    Raises:
        EdgesegError: For an unknown mode; the message lists the valid ones.
    """
    if mode not in UPSAMPLING_MODES:
        raise EdgesegError(
            f"unknown upsampling {mode!r}; valid: {', '.join(UPSAMPLING_MODES)}"
        )
    return mode


def check_input_size(input_size, multiple: int, arch: str) -> tuple[int, int]:
    """Check that an input size is fixed, at least 32 and divisible by ``multiple``.

    Args:
        input_size: ``(height, width)``.
        multiple: Required divisor (the deepest stride the architecture uses).
        arch: Architecture name for the message.

    Returns:
        ``(height, width)`` as ints.

    Raises:
        EdgesegError: When a side is missing, smaller than 32, or not divisible.
    """
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError) as exc:
        raise EdgesegError(f"input_size must be (height, width) integers, got {input_size!r}") from exc
    if h < 32 or w < 32 or h % multiple or w % multiple:
        lo = max(multiple, 32)
        raise EdgesegError(
            f"{arch} needs an input size whose sides are multiples of {multiple} and at least "
            f"32 (e.g. {lo}, {lo + multiple}, 256, 512), got {h}x{w}; tile or pad to such a size"
        )
    return h, w


def conv_bn_relu(x, filters: int, name: str, kernel_size: int = 1):
    """Conv2D (no bias) -> BatchNormalization -> ReLU."""
    _, keras = tf_keras()
    L = keras.layers
    x = L.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def atrous_depthwise(x, rate: int, name: str):
    """A 3x3 depthwise convolution with dilation ``rate`` and "same" padding, built from taps.

    ``sum over (i, j) of DW1x1_ij(shift(x, (i * rate, j * rate)))`` for i, j in {-1, 0, 1},
    with the shifts done by one ``ZeroPadding2D`` and ``Cropping2D`` slices: numerically the
    same as ``DepthwiseConv2D(3, dilation_rate=rate, padding="same")`` plus a bias (the
    centre tap's), but with no SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND. TensorFlow implements a
    dilated convolution with those two ops; after QAT, TFLite keeps them and the int8 model
    then fails to prepare in LiteRT's default XNNPACK delegate. Taps that fall entirely outside
    the (static) feature map are left out (they only ever see zero padding). The taps are
    summed by two-input ``Add`` layers: a three-input ``Add`` under QAT leaves an intermediate
    sum without quantization parameters and the int8 model aborts at allocation.

    Args:
        x: Input ``(N, h, w, C)`` with static ``h, w``.
        rate: Dilation rate (>= 1).
        name: Prefix of the layer names: ``{name}_pad``, ``{name}_shift_{i}{j}``,
            ``{name}_tap_{i}{j}`` (i, j in 0..2, kernel row/column), ``{name}_add{n}``.

    Returns:
        ``(N, h, w, C)``.
    """
    _, keras = tf_keras()
    L = keras.layers
    h, w = int(x.shape[1]), int(x.shape[2])
    padded = L.ZeroPadding2D(rate, name=f"{name}_pad")(x)
    taps = []
    for i in range(3):
        for j in range(3):
            dy, dx = (i - 1) * rate, (j - 1) * rate
            if abs(dy) >= h or abs(dx) >= w:
                continue
            centre = dy == 0 and dx == 0
            t = x if centre else L.Cropping2D(
                ((rate + dy, rate - dy), (rate + dx, rate - dx)), name=f"{name}_shift_{i}{j}"
            )(padded)
            taps.append(L.DepthwiseConv2D(1, use_bias=centre, name=f"{name}_tap_{i}{j}")(t))
    n = 0
    while len(taps) > 1:
        pairs = [taps[k : k + 2] for k in range(0, len(taps), 2)]
        taps = []
        for pair in pairs:
            if len(pair) == 2:
                pair = [L.Add(name=f"{name}_add{n}")(pair)]
                n += 1
            taps.append(pair[0])
    return taps[0]


def sep_conv_bn_relu(x, filters: int, name: str, dilation: int = 1):
    """Depthwise-separable block: DW 3x3 -> BN -> ReLU -> 1x1 conv -> BN -> ReLU.

    Written as two layers rather than one ``SeparableConv2D`` so that each convolution gets
    its own folded batch-norm (the form that converts to int8 TFLite). With ``dilation > 1``
    the depthwise part is :func:`atrous_depthwise` with a bias instead of a batch-norm
    (tfmot cannot quantize a batch-norm that follows an ``Add``).
    """
    _, keras = tf_keras()
    L = keras.layers
    if dilation > 1:
        x = atrous_depthwise(x, dilation, f"{name}_dw")
    else:
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = L.BatchNormalization(epsilon=1e-3, name=f"{name}_dw_bn")(x)
    x = L.ReLU(name=f"{name}_dw_relu")(x)
    return conv_bn_relu(x, filters, f"{name}_pw")


def upsample(x, factor: int, mode: str, name: str, filters: int | None = None,
             switches: list | None = None):
    """Upsample by an integer factor.

    ``bilinear`` / ``nearest``: ``UpSampling2D``. ``transpose``: ``Conv2DTranspose`` with
    stride ``factor``, kernel ``2 * factor`` for a factor of 2 (overlapping taps) and
    ``factor`` otherwise (non-overlapping, bounding the cost): the kernel is always divisible
    by the stride, so no checkerboard. It has a bias and no batch-norm after it (a QAT
    transposed conv followed by BN stays float in TFLite). ``unpool``: one :func:`max_unpool`
    step (x2) per encoder feature map in ``switches``; without ``switches`` (the head, where
    the encoder has no feature map at the input resolution) bilinear ``UpSampling2D``.

    Args:
        x: Input tensor.
        factor: Integer scale factor (1 returns ``x``).
        mode: One of :data:`UPSAMPLING_MODES`.
        name: Layer name (with ``unpool`` and several steps, step ``i`` is ``{name}{i}``).
        filters: Output channels of the transposed convolution (default: input channels).
            Unpooling gives the channels of its switch feature map.
        switches: ``unpool`` only: the encoder feature maps whose 2x2 max-pooling positions
            place the values, coarsest first, each twice the resolution of the one before
            (``factor == 2 ** len(switches)``).

    Returns:
        The upsampled tensor.

    Raises:
        EdgesegError: When ``switches`` do not fit ``factor``.
    """
    _, keras = tf_keras()
    check_upsampling(mode)
    if factor == 1:
        return x
    if mode == "unpool" and switches:
        switches = list(switches)
        if 2 ** len(switches) != factor:
            raise EdgesegError(f"{name}: {len(switches)} switch maps give a factor of "
                               f"{2 ** len(switches)}, not {factor}")
        for i, feature in enumerate(switches, start=1):
            x = max_unpool(x, feature, name if len(switches) == 1 else f"{name}{i}")
        return x
    if mode == "unpool":
        mode = "bilinear"
    if mode == "transpose":
        kernel = 2 * factor if factor == 2 else factor
        return keras.layers.Conv2DTranspose(
            filters or int(x.shape[-1]), kernel, strides=factor, padding="same",
            use_bias=True, name=name,
        )(x)
    return keras.layers.UpSampling2D(factor, interpolation=mode, name=name)(x)


def head(x, num_classes: int, factor: int, upsampling: str):
    """Classifier head: 1x1 conv to K logits (or 1), upsample to input size, activation.

    With ``unpool`` the head upsamples bilinearly (there are no switches at the input
    resolution, see :func:`upsample`).

    Args:
        x: Decoder output.
        num_classes: K >= 2 gives a softmax over K channels; 1 gives one sigmoid channel.
        factor: Upsampling factor from ``x`` to the input resolution.
        upsampling: Upsampling mode.

    Returns:
        Probabilities ``(N, H, W, K)`` or ``(N, H, W, 1)``.

    Raises:
        EdgesegError: When ``num_classes`` is smaller than 1.
    """
    _, keras = tf_keras()
    if int(num_classes) < 1:
        raise EdgesegError(f"num_classes must be at least 1, got {num_classes}")
    x = keras.layers.Conv2D(num_classes, 1, padding="same", name="head_logits")(x)
    x = upsample(x, factor, upsampling, "head_upsample")
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return keras.layers.Activation(activation, dtype="float32", name=f"head_{activation}")(x)




def max_unpool(x, switches, name: str):
    """SegNet-style max-unpooling x2 of ``x`` at the max-pooling switches of ``switches``.

    ``x`` (stride ``2s``) is first projected by a 1x1 conv + BN + ReLU (``{name}_proj``) to the
    channels of ``switches``, an encoder feature map at stride ``s``; ``MaxUnpool2D``
    (``{name}``) then writes each value of the projection into its 2x2 window of the output at
    the position where ``switches`` has that window's maximum, channel by channel, and zero at
    the other three positions. Ties go to the first position in window order (top-left,
    top-right, bottom-left, bottom-right), so every window holds exactly one value. MobileNet
    encoders downsample by strided convolutions, not max-pooling: the switches are those of a
    2x2 max-pooling of the encoder's feature map at the output resolution.

    The layer is built from operators that TFLite has in int8 and that keep ties exact:
    ``SPACE_TO_DEPTH`` splits the switch map into the four window positions, ``MAXIMUM`` gives
    the window maximum and the maximum of the positions before each one, ``GREATER_EQUAL`` /
    ``LESS`` / ``LOGICAL_AND`` mark the first position holding the maximum,
    ``SELECT_V2`` takes the value there (zero elsewhere) and ``DEPTH_TO_SPACE`` puts the four
    positions back. The comparisons are between int8 values of one scale in the quantized
    model, so a switch is the first maximum of the int8 feature map exactly, ties included.
    No scatter, no ``MaxPoolWithArgmax`` (neither has an int8 TFLite builtin).

    Args:
        x: Values ``(N, h, w, C)``.
        switches: Encoder feature map ``(N, 2h, 2w, S)`` with static sides.
        name: Layer name of the unpooling; the projection is ``{name}_proj``.

    Returns:
        ``(N, 2h, 2w, S)``.

    Raises:
        EdgesegError: When ``switches`` is not twice the resolution of ``x``.
    """
    _, keras = tf_keras()
    h, w = int(x.shape[1]), int(x.shape[2])
    if tuple(switches.shape[1:3]) != (UNPOOL_WINDOW * h, UNPOOL_WINDOW * w):
        raise EdgesegError(f"{name}: switches of {tuple(switches.shape[1:3])} do not unpool "
                           f"{(h, w)} x{UNPOOL_WINDOW}")
    x = conv_bn_relu(x, int(switches.shape[-1]), f"{name}_proj")
    return custom_layer("MaxUnpool2D")(name=name)([x, switches])


def custom_layer(name: str) -> type:
    """One of edgeseg's own Keras layer classes by name (``"MaxUnpool2D"``).

    Raises:
        EdgesegError: For an unknown name.
    """
    tf_keras()  # defines and registers them (edgeseg.keras_layers.register_custom_layers)
    if name not in _CUSTOM_LAYERS:
        raise EdgesegError(f"unknown edgeseg layer {name!r}; known: {', '.join(sorted(_CUSTOM_LAYERS))}")
    return _CUSTOM_LAYERS[name]
