import numpy as np
import pytest

from edgeseg.models import (
    ARCHITECTURES,
    BACKBONES,
    build_model,
    decoder_layers,
    encoder_layers,
    head_layers,
    list_models,
    model_summary,
)
from edgeseg.models.backbones import resolve_weights
from firmware_bridge.errors import EdgesegError


def keras_module():
    from edgeseg.tf_env import tf_keras

    return tf_keras()[1]


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test builds into a fresh Keras session (stops build times creeping up)."""
    yield
    keras_module().backend.clear_session()


def test_registry_names():
    assert sorted(ARCHITECTURES) == ["deeplabv3plus", "mobileunet"]
    assert sorted(BACKBONES) == [
        "mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100",
        "mobilenetv3_large", "mobilenetv3_small",
    ]
    assert len(list_models()) == 12
    for spec in BACKBONES.values():
        assert sorted(spec["features"]) == [2, 4, 8, 16, 32]


@pytest.mark.parametrize(("arch", "backbone"), list_models())
def test_every_model_builds_at_two_sizes(arch, backbone):
    # Softmax head at 64x64, sigmoid head at a non-square 96x64.
    for size, classes in (((64, 64), 3), ((96, 64), 1)):
        model = build_model(arch, backbone, classes, input_size=size)
        assert model.output_shape == (None, *size, classes)
        # What QAT + int8 TFLite need: no Lambda / TF-op layers, no dilated convolutions
        # (they become SPACE_TO_BATCH_ND that XNNPACK refuses after QAT).
        for layer in model.layers:
            assert type(layer).__name__ not in {"Lambda", "TFOpLambda", "Resizing"}, layer.name
            assert tuple(getattr(layer, "dilation_rate", (1, 1))) == (1, 1), layer.name
        x = np.random.default_rng(0).uniform(-1, 1, (1, *size, 3)).astype(np.float32)
        y = model(x, training=False).numpy()
        if classes > 1:
            np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
        assert ((y >= 0) & (y <= 1)).all()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("upsampling", ["nearest", "transpose"])
def test_upsampling_modes(arch, upsampling):
    model = build_model(arch, "mobilenetv2_035", 4, input_size=(64, 64), upsampling=upsampling)
    assert model.output_shape == (None, 64, 64, 4)
    kinds = {type(layer).__name__ for layer in model.layers}
    if upsampling == "transpose":
        assert "Conv2DTranspose" in kinds
        resizes = [layer.name for layer in model.layers if type(layer).__name__ == "UpSampling2D"]
        assert resizes == (["dec_aspp_pool_up"] if arch == "deeplabv3plus" else [])
        for layer in model.layers:
            if type(layer).__name__ == "Conv2DTranspose":
                assert layer.use_bias and layer.kernel_size[0] % layer.strides[0] == 0
                consumers = [n.outbound_layer for n in layer.outbound_nodes]
                assert all(type(c).__name__ != "BatchNormalization" for c in consumers)
    else:
        assert "Conv2DTranspose" not in kinds


@pytest.mark.parametrize(("stride", "feature_side"), [(8, 8), (16, 4), (32, 2)])
def test_deeplab_output_strides(stride, feature_side):
    model = build_model("deeplabv3plus", "mobilenetv2_035", 2, input_size=(64, 64),
                        output_stride=stride, atrous_rates=(1, 2))
    assert model.get_layer("dec_aspp_pool").input_shape[1:3] == (feature_side, feature_side)
    assert model.output_shape == (None, 64, 64, 2)


@pytest.mark.parametrize(
    ("arch", "size", "kw"),
    [
        ("deeplabv3plus", (100, 100), {}),
        ("deeplabv3plus", (64, 72), {"output_stride": 16}),
        ("deeplabv3plus", (16, 16), {"output_stride": 8}),
        ("mobileunet", (48, 64), {}),
        ("mobileunet", (None, 64), {}),
    ],
)
def test_invalid_input_sizes_raise(arch, size, kw):
    with pytest.raises(EdgesegError, match="input size|input_size"):
        build_model(arch, "mobilenetv2_035", 3, input_size=size, **kw)


def test_unknown_names_list_valid_choices():
    with pytest.raises(EdgesegError, match="valid architectures: deeplabv3plus, mobileunet"):
        build_model("unet", "mobilenetv2_035", 3)
    with pytest.raises(EdgesegError, match="valid backbones: mobilenetv2_035.*mobilenetv3_small"):
        build_model("mobileunet", "resnet50", 3, input_size=(64, 64))
    with pytest.raises(EdgesegError, match="valid: bilinear, nearest, transpose"):
        build_model("mobileunet", "mobilenetv2_035", 3, input_size=(64, 64), upsampling="cubic")
    with pytest.raises(EdgesegError, match="output_stride must be one of"):
        build_model("deeplabv3plus", "mobilenetv2_035", 3, input_size=(64, 64), output_stride=4)
    with pytest.raises(EdgesegError, match="apply to deeplabv3plus"):
        build_model("mobileunet", "mobilenetv2_035", 3, input_size=(64, 64), output_stride=8)
    with pytest.raises(EdgesegError, match="invalid option"):
        build_model("mobileunet", "mobilenetv2_035", 3, input_size=(64, 64), filters=8)


def test_imagenet_without_cache_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(EdgesegError, match="cannot be downloaded here.*weights file"):
        resolve_weights("mobilenetv2_035", "imagenet")
    cached = tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"")
    assert resolve_weights("mobilenetv2_035", "imagenet") == str(cached)
    with pytest.raises(EdgesegError, match="not found"):
        resolve_weights("mobilenetv2_035", tmp_path / "missing.h5")


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_parts_partition_the_layers(arch):
    keras = keras_module()
    model = build_model(arch, "mobilenetv2_035", 3, input_size=(64, 64))
    enc, dec, head = encoder_layers(model), decoder_layers(model), head_layers(model)
    assert len(enc) + len(dec) + len(head) == len(model.layers) - 1  # minus the input
    app = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35,
                                         include_top=False, weights=None)
    app_names = {layer.name for layer in app.layers}
    assert {layer.name for layer in enc} <= app_names
    assert [layer.name for layer in head][0] == "head_logits"
    deepest = "out_relu" if arch == "mobileunet" else "block_13_expand_relu"
    assert deepest in {layer.name for layer in enc}
    if arch == "deeplabv3plus":  # OS16 drops the blocks after the stride-16 features
        assert "block_13_depthwise" not in {layer.name for layer in enc}


@pytest.mark.parametrize("backbone", ["mobilenetv3_small", "mobilenetv3_large"])
def test_mobilenetv3_rewritten_without_tf_ops_matches_application(backbone):
    from edgeseg.models.backbones import build_backbone

    keras = keras_module()
    inp = keras.Input((64, 96, 3))
    features = build_backbone(backbone, inp)
    rebuilt = keras.Model(inp, [features[s] for s in (2, 4, 8, 16, 32)])
    kinds = {type(layer).__name__ for layer in rebuilt.layers}
    assert "TFOpLambda" not in kinds and "Rescaling" in kinds
    constructor = getattr(keras.applications, BACKBONES[backbone]["constructor"])
    app = constructor(input_shape=(64, 96, 3), include_top=False, weights=None,
                      include_preprocessing=False)
    rebuilt.set_weights(app.get_weights())  # same order: Rescaling has no weights
    # A wide input range so that the hard-sigmoids see both clipped ends.
    x = np.random.default_rng(4).uniform(-4, 4, (1, 64, 96, 3)).astype(np.float32)
    outs = rebuilt(x)
    assert [tuple(o.shape[1:3]) for o in outs] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    expected = app(x).numpy()
    # Both graphs run the same convolutions; they differ in the 27-28 hard-sigmoids, relu6(x + 3)
    # * (1/6) against x * (1/6) + 0.5 clipped at 1: two float32 roundings each way, up to
    # 4 * 2^-24 of a value <= 1 per layer, at most 112 * 2^-24 = 6.7e-6 of the outputs' scale
    # carried forward. A wrong constant (x + 2, or 1/5) moves a gate by 10 % or more.
    np.testing.assert_allclose(outs[-1].numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(("arch", "suffix"), [("deeplabv3plus", ".keras"), ("mobileunet", ".h5")])
def test_save_load_round_trip(tmp_path, arch, suffix):
    keras = keras_module()
    model = build_model(arch, "mobilenetv2_035", 3, input_size=(64, 64), upsampling="transpose")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    path = str(tmp_path / f"model{suffix}")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    assert [w.name for w in loaded.weights] == [w.name for w in model.weights]


def test_weights_file_loads_into_encoder(shared_dir):
    import h5py

    path = shared_dir / "weights" / "mobilenet_v2_0.35_224_no_top.h5"
    if not path.is_file():
        pytest.skip(f"weights file missing: {path}")
    random = build_model("mobileunet", "mobilenetv2_035", 3, input_size=(64, 64))
    loaded = build_model("mobileunet", "mobilenetv2_035", 3, input_size=(64, 64),
                         encoder_weights=path)
    with h5py.File(path, "r") as f:
        for layer, var in (("Conv1", "kernel:0"), ("block_16_project", "kernel:0"),
                           ("bn_Conv1", "moving_variance:0")):
            expected = f[layer][layer][var][()]
            names = [w.name.split("/")[-1] for w in loaded.get_layer(layer).weights]
            got = loaded.get_layer(layer).get_weights()[names.index(var)]
            np.testing.assert_array_equal(got, expected)
            other = random.get_layer(layer).get_weights()[names.index(var)]
            assert not np.allclose(other, expected)
    # Decoder and head are untouched by the encoder weights: same shapes, fresh init.
    assert [w.shape for w in decoder_layers(loaded)[0].weights] == [
        w.shape for w in decoder_layers(random)[0].weights
    ]
    with pytest.raises(EdgesegError, match="does not fit backbone mobilenetv2_050"):
        build_model("mobileunet", "mobilenetv2_050", 3, input_size=(64, 64),
                    encoder_weights=path)


def test_atrous_taps_equal_dilated_depthwise():
    from edgeseg.models.layers import atrous_depthwise

    keras = keras_module()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 12, 16, 4)).astype(np.float32)
    for rate in (1, 3, 6, 13):  # 13 >= 12 rows: the vertical taps see only padding
        inp = keras.Input((12, 16, 4))
        ref = keras.layers.DepthwiseConv2D(3, dilation_rate=rate, padding="same")
        reference = keras.Model(inp, ref(inp))
        taps = keras.Model(inp, atrous_depthwise(inp, rate, f"a{rate}"))
        kernel = rng.normal(size=(3, 3, 4, 1)).astype(np.float32)
        bias = rng.normal(size=(4,)).astype(np.float32)
        ref.set_weights([kernel, bias])
        for layer in taps.layers:
            if "_tap_" in layer.name:
                i, j = (int(c) for c in layer.name[-2:])
                w = [kernel[i : i + 1, j : j + 1]] + ([bias] if layer.use_bias else [])
                layer.set_weights(w)
        got, want = taps(x).numpy(), reference(x).numpy()
        # Nine products and the bias summed in float32, in whatever order each path's kernel
        # takes: each within 10 * 2^-24 of the sum of the terms' magnitudes, which the reference
        # layer gives on |x| with |kernel| and |bias|. A misplaced or missing tap is off by a
        # whole product (~1).
        ref.set_weights([np.abs(kernel), np.abs(bias)])
        magnitude = reference(np.abs(x)).numpy()
        np.testing.assert_array_less(np.abs(got - want), 2 * 10 * 2.0**-24 * magnitude)
        n_taps = sum("_tap_" in layer.name for layer in taps.layers)
        assert n_taps == (3 if rate >= 12 else 9)
        assert all(type(layer).__name__ != "DepthwiseConv2D" or layer.dilation_rate == (1, 1)
                   for layer in taps.layers)


def test_model_summary_counts_macs_by_hand():
    keras = keras_module()
    L = keras.layers
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)        # 16*16*9*3*8
    x = L.DepthwiseConv2D(3, strides=2, padding="same")(x)         # 8*8*9*8
    x = L.SeparableConv2D(4, 3, padding="same")(x)                 # 8*8*9*8 + 8*8*8*4
    x = L.Conv2DTranspose(2, 4, strides=2, padding="same")(x)      # 8*8*16*4*2
    x = L.BatchNormalization()(x)
    x = L.Dense(5)(x)                                              # 16*16*2*5
    model = keras.Model(inp, x)
    expected = (16 * 16 * 9 * 3 * 8 + 8 * 8 * 9 * 8 + 8 * 8 * 9 * 8 + 8 * 8 * 8 * 4
                + 8 * 8 * 16 * 4 * 2 + 16 * 16 * 2 * 5)
    summary = model_summary(model)
    assert summary["macs"] == expected
    assert summary["params"] == model.count_params()
    assert summary["trainable_params"] == model.count_params() - 2 * 2  # BN moving stats


@pytest.fixture(scope="session")
def quantized_models():
    """Both architectures through tfmot's quantize_model (small: 64x64, alpha 0.35)."""
    import tensorflow_model_optimization as tfmot

    out = {}
    for arch in sorted(ARCHITECTURES):
        model = build_model(arch, "mobilenetv2_035", 3, input_size=(64, 64),
                            upsampling="transpose" if arch == "mobileunet" else "bilinear",
                            **({"atrous_rates": (1, 2)} if arch == "deeplabv3plus" else {}))
        out[arch] = (model, tfmot.quantization.keras.quantize_model(model))
    return out


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_quantize_model_accepts_both_architectures(quantized_models, arch):
    model, qmodel = quantized_models[arch]
    wrapped = [layer for layer in qmodel.layers if type(layer).__name__ == "QuantizeWrapperV2"]
    conv_like = [layer for layer in model.layers
                 if type(layer).__name__ in {"Conv2D", "DepthwiseConv2D", "Conv2DTranspose"}]
    assert len(wrapped) >= len(conv_like)
    assert qmodel.output_shape == model.output_shape
    x = np.random.default_rng(3).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    y = qmodel(x, training=False).numpy()
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-4)
    # Parts stay recognisable through the quant_ prefix.
    assert len(encoder_layers(qmodel)) > 0 and len(head_layers(qmodel)) > 0
