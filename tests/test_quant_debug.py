"""The per-layer int8 error report: the SQNR measure, and that it names the layer at fault."""

import numpy as np
import pytest

from edgeseg.quantization.debug import MAX_DB, layer_errors, simulated_int8, sqnr_db
from edgeseg.tf_env import tf_keras


def test_sqnr_is_per_channel_variation_over_error():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (10_000, 3))
    assert sqnr_db(ref, ref) == MAX_DB
    noisy = ref + rng.normal(0, 0.1, ref.shape)
    assert sqnr_db(ref, noisy) == pytest.approx(20.0, abs=0.3)
    # A large constant offset is not signal: the same noise on it gives the same SQNR.
    assert sqnr_db(ref + 100.0, noisy + 100.0) == pytest.approx(20.0, abs=0.3)
    # A channel that never varies carries nothing and is left out of the median.
    flat = np.concatenate([ref, np.full((10_000, 1), 5.0)], axis=1)
    approx = np.concatenate([noisy, np.full((10_000, 1), 4.0)], axis=1)
    assert sqnr_db(flat, approx) == pytest.approx(20.0, abs=0.3)
    assert sqnr_db(np.zeros((4, 2)), np.ones((4, 2))) == 0.0


def chain(outlier: float):
    """conv -> relu, four times, then logits; ``r2``'s first channel is ``outlier`` times larger."""
    _, keras = tf_keras()
    x = keras.Input((8, 8, 3))
    y = x
    for i in range(4):
        y = keras.layers.ReLU(name=f"r{i}")(keras.layers.Conv2D(4, 1, name=f"c{i}")(y))
    model = keras.Model(x, keras.layers.Conv2D(3, 1, name="logits")(y))
    rng = np.random.default_rng(2)
    for i in range(4):
        kernel = rng.normal(0, 1, (1, 1, 3 if i == 0 else 4, 4)).astype(np.float32)
        if i == 2:
            kernel[..., 0] *= outlier
        model.get_layer(f"c{i}").set_weights([kernel, np.full(4, 0.5, np.float32)])
    model.get_layer("logits").set_weights([rng.normal(0, 1, (1, 1, 4, 3)).astype(np.float32),
                                           np.zeros(3, np.float32)])
    return model


def test_report_names_the_layer_with_an_outlier_range():
    images = np.random.default_rng(3).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    plain = chain(1.0)
    clean = layer_errors(plain, simulated_int8(plain, images), images)
    model = chain(2000.0)
    report = layer_errors(model, simulated_int8(model, images), images)
    worst = report.worst(1)[0]
    assert worst.layer == "r2", report.text()
    assert worst.hi > 100 * max(e.hi for e in report.layers if e.layer == "r1")
    assert worst.sqnr_db < 15 < min(e.sqnr_db for e in clean.layers)
    assert "r2" in report.text().splitlines()[1]
    assert 40 < report.input_sqnr_db < 55  # 8 bits of a uniform input: about 48 dB
    assert report.to_dict()["layers"][0]["layer"] == "r2"
