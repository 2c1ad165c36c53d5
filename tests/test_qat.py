"""QAT mechanics: which layers quantize, MobileNetV3 annotations, activation-range calibration."""

import numpy as np
import pytest

from edgeseg.quantization.qat import quantize, unsupported_layers
from edgeseg.quantization.ranges import activation_range_variables, calibrate_ranges
from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError


def test_qat_accepts_mobilenetv3_by_annotation_and_refuses_lambda():
    from edgeseg.models import build_model
    from edgeseg.quantization.annotate import needs_annotation

    _, keras = tf_keras()
    import tensorflow_model_optimization as tfmot

    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    v3 = build_model("mobileunet", "mobilenetv3_small", 3, (64, 64))
    assert unsupported_layers(v3) == []
    kinds = {type(layer).__name__ for layer in needs_annotation(v3, registry)}
    assert kinds == {"Multiply", "Rescaling"}  # hard-swish, squeeze-excite, hard-sigmoid
    x = keras.Input((8, 8, 3))
    lam = keras.Model(x, keras.layers.Conv2D(2, 1)(keras.layers.Lambda(lambda t: t * 2.0)(x)))
    assert unsupported_layers(lam) == [f"{lam.layers[1].name} (Lambda)"]
    with pytest.raises(EdgesegError, match=r"QAT cannot quantize 1 layer.*\(Lambda\)"):
        quantize(lam)




def test_calibrated_ranges_are_the_measured_ones_not_tfmots_six():
    """A conv whose outputs reach +-9.6: tfmot starts its range at [-6, 6]; calibration measures it."""
    _, keras = tf_keras()
    x = keras.Input((4, 4, 2))
    model = keras.Model(x, keras.layers.Conv2D(3, 1, name="c")(x))
    model.get_layer("c").set_weights([np.array([[[[10, 0, -2], [0, 5, 1]]]], np.float32),
                                      np.zeros(3, np.float32)])
    qat = quantize(model)
    ranges = activation_range_variables(qat)
    assert [v.name.split("/")[-1] for v in ranges] == ["post_activation_min:0", "post_activation_max:0"]
    assert [float(v.numpy()) for v in ranges] == [-6.0, 6.0]
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-1, 1, (2, 4, 4, 2)).astype(np.float32) for _ in range(3)]
    assert calibrate_ranges(qat, model, batches) == 4  # the input's range and the conv's
    outs = [model(b).numpy() for b in batches]
    dead = keras.Model(x, keras.layers.ReLU(name="r")(keras.layers.Conv2D(1, 1, name="d")(x)))
    dead.get_layer("d").set_weights([np.zeros((1, 1, 2, 1), np.float32), np.full(1, -1.0, np.float32)])
    dead_qat = quantize(dead)
    calibrate_ranges(dead_qat, dead, batches)  # always 0 after the ReLU: [0, 0] would give NaN scales
    lo, hi = (float(v.numpy()) for v in activation_range_variables(dead_qat)[-2:])
    assert (lo, hi) == (0.0, pytest.approx(1e-3))
    assert np.isfinite(dead_qat(batches[0], training=False).numpy()).all()
    # The float model's extremes over all batches, as a post-training calibration takes them.
    assert float(ranges[0].numpy()) == pytest.approx(min(o.min() for o in outs), rel=1e-6)
    assert float(ranges[1].numpy()) == pytest.approx(max(o.max() for o in outs), rel=1e-6)
    weights = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in qat.non_trainable_weights}
    input_range = {k.rpartition("_")[2]: v for k, v in weights.items() if k.startswith("quantize_layer")}
    assert input_range["min"] == pytest.approx(min(b.min() for b in batches))
    assert input_range["max"] == pytest.approx(max(b.max() for b in batches))
    np.testing.assert_allclose(weights["kernel_max"], [10, 5, 2])
    # Calibrated, the QAT model follows the float one to within two quantization steps; with
    # tfmot's initial [-6, 6] it was off by up to 3.6.
    lo, hi = float(ranges[0].numpy()), float(ranges[1].numpy())
    np.testing.assert_allclose(qat(batches[0], training=False).numpy(), outs[0],
                               atol=2 * (hi - lo) / 255)


def test_small_activations_survive_calibration():
    """Activations of +-0.01 deep in a chain: measured through the fake-quant chain from tfmot's
    initial [-6, 6] they round to 0 and every later range is measured on zeros; measured on the
    float model, the QAT model follows it (the collapse of a denoising-pretrained encoder)."""
    from edgeseg.quantization.debug import layer_errors

    _, keras = tf_keras()
    x = keras.Input((8, 8, 3))
    y = x
    for i in range(4):
        y = keras.layers.Conv2D(4, 1, name=f"c{i}")(y)
        y = keras.layers.ReLU(name=f"r{i}")(y)
    out = keras.layers.Conv2D(2, 1, name="logits")(y)
    model = keras.Model(x, out)
    rng = np.random.default_rng(1)
    for i in range(4):  # the first layer shrinks the signal to +-0.01, the others carry it on
        kernel = (rng.normal(0, 0.01, (1, 1, 3, 4)) if i == 0
                  else np.eye(4)[None, None] + rng.normal(0, 0.1, (1, 1, 4, 4)))
        model.get_layer(f"c{i}").set_weights([kernel.astype(np.float32), np.zeros(4, np.float32)])
    model.get_layer("logits").set_weights([rng.normal(0, 1, (1, 1, 4, 2)).astype(np.float32),
                                           np.zeros(2, np.float32)])
    batches = [rng.uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32) for _ in range(2)]
    qat = quantize(model)
    calibrate_ranges(qat, model, batches)
    r0 = [float(v.numpy()) for v in activation_range_variables(qat)[:2]]
    assert 0.0 < r0[1] < 0.1  # the measured +-0.01 scale, not 6
    report = layer_errors(model, qat, batches[0])
    assert report.output_sqnr_db > 25, report.text()
