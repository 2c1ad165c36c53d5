"""QAT mechanics: which layers quantize, MobileNetV3 annotations, activation-range calibration."""

import numpy as np
import pytest

from edgeseg.qat import quantize, unsupported_layers
from edgeseg.qat_ranges import activation_range_variables, calibrate_ranges
from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError


def test_qat_accepts_mobilenetv3_by_annotation_and_refuses_lambda():
    from edgeseg.models import build_model
    from edgeseg.qat_annotate import needs_annotation

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
    assert calibrate_ranges(qat, batches, rounds=2) == 2
    outs = [model(b).numpy() for b in batches]
    dead = keras.Model(x, keras.layers.ReLU(name="r")(keras.layers.Conv2D(1, 1, name="d")(x)))
    dead.get_layer("d").set_weights([np.zeros((1, 1, 2, 1), np.float32), np.full(1, -1.0, np.float32)])
    dead_qat = quantize(dead)
    calibrate_ranges(dead_qat, batches)  # always 0 after the ReLU: [0, 0] would give NaN scales
    lo, hi = (float(v.numpy()) for v in activation_range_variables(dead_qat)[-2:])
    assert (lo, hi) == (0.0, pytest.approx(1e-3))
    assert np.isfinite(dead_qat(batches[0], training=False).numpy()).all()
    # The mean over batches of each batch's range (the input is 8-bit quantized first: +-0.05).
    assert float(ranges[0].numpy()) == pytest.approx(np.mean([o.min() for o in outs]), abs=0.05)
    assert float(ranges[1].numpy()) == pytest.approx(np.mean([o.max() for o in outs]), abs=0.05)
    weights = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in qat.non_trainable_weights}
    input_min = next(v for k, v in weights.items() if k.startswith("quantize_layer") and k.endswith("_min"))
    assert input_min == pytest.approx(
        min(b.min() for b in batches))  # all-values quantizer: the running minimum
    np.testing.assert_allclose(weights["kernel_max"], [10, 5, 2])
    # Calibrated, the QAT model follows the float one (clipped to the range) to within two
    # quantization steps; with tfmot's initial [-6, 6] it was off by up to 3.6.
    lo, hi = float(ranges[0].numpy()), float(ranges[1].numpy())
    np.testing.assert_allclose(qat(batches[0], training=False).numpy(), np.clip(outs[0], lo, hi),
                               atol=2 * (hi - lo) / 255)

