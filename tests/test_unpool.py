"""Max-unpooling upsampling (``--upsampling unpool``): switch positions and ties, exact int8,
``edgeseg models``, saving, and one tiny run through training, QAT and export with parity.

The run (MobileUNet-0.35, 64x64 crops of generated scenes) trains a few steps; its QAT model
(activation ranges from the float model, one gradient step checked) and the float model are
exported to float TFLite, QAT int8 TFLite, ONNX and OpenVINO, each checked against the Keras
model through the device runtime.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.data import load_split, synthetic
from edgeseg.models import build_model, decoder_layers
from edgeseg.training.train import TrainConfig, train
from export.tflite_ops import float_compute_ops, op_counts
from firmware_bridge.io.classes import ClassTable


def keras_tf():
    from edgeseg.tf_env import tf_keras

    return tf_keras()


def unpool_layer(name="unpool"):
    from edgeseg.models.layers import custom_layer

    return custom_layer("MaxUnpool2D")(name=name)


def reference_unpool(values: np.ndarray, switches: np.ndarray) -> np.ndarray:
    """Each value at the first (row-major) maximum of its 2x2 window of ``switches``."""
    n, h, w, c = values.shape
    out = np.zeros((n, 2 * h, 2 * w, c), values.dtype)
    for b, i, j, k in np.ndindex(n, h, w, c):
        window = switches[b, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, k]
        di, dj = divmod(int(np.argmax(window)), 2)  # argmax: the first of tied maxima
        out[b, 2 * i + di, 2 * j + dj, k] = values[b, i, j, k]
    return out


# Two channels of 4x4 switches; windows (top-left, top-right, bottom-left, bottom-right).
SWITCH_WINDOWS = [
    # channel 0: a unique maximum, all four tied, the bottom row tied, the diagonal tied
    [[[1, 5], [3, 2]], [[7, 7], [7, 7]], [[0, 2], [9, 9]], [[4, 1], [1, 4]]],
    # channel 1: negatives with (0,1) and (1,0) tied, zeros, a unique maximum last, three tied
    [[[-3, -1], [-1, -2]], [[0, 0], [0, 0]], [[-5, -6], [-7, -4]], [[2, 3], [3, 3]]],
]
EXPECTED_POSITIONS = [[(0, 1), (0, 0), (1, 0), (0, 0)], [(0, 1), (0, 0), (1, 1), (0, 1)]]
"""Where each window's value must land (row, column inside the window)."""


def switch_map() -> np.ndarray:
    s = np.zeros((1, 4, 4, 2), np.float32)
    for k, windows in enumerate(SWITCH_WINDOWS):
        for n, window in enumerate(windows):
            i, j = divmod(n, 2)
            s[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, k] = window
    return s


def test_values_land_at_the_first_maximum_of_each_window_ties_included():
    tf, _ = keras_tf()
    switches = switch_map()
    values = np.array([[[[1.5, -2.0], [-3.0, 4.0]], [[5.0, 6.5], [-7.0, 8.0]]]], np.float32)
    y = tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch(y)
        out = unpool_layer()([y, tf.constant(switches)])
        total = tf.reduce_sum(out)
    grad = tape.gradient(total, y).numpy()
    out = out.numpy()
    assert out.shape == (1, 4, 4, 2)
    np.testing.assert_array_equal(out, reference_unpool(values, switches))
    for k in range(2):
        for n, (di, dj) in enumerate(EXPECTED_POSITIONS[k]):
            i, j = divmod(n, 2)
            window = out[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, k]
            assert np.count_nonzero(window) == 1, (k, n, window)  # one position per window
            assert window[di, dj] == values[0, i, j, k], (k, n, window)
    np.testing.assert_array_equal(grad, np.ones_like(values))  # every value reaches the output


def test_unpooling_is_exact_in_int8_on_litert_with_xnnpack():
    """Integer-only TFLite of the layer: int8 values land at the first int8 maximum, ties kept."""
    from ai_edge_litert.interpreter import Interpreter

    tf, keras = keras_tf()
    values_in = keras.Input((8, 8, 4), batch_size=1, name="values")
    switches_in = keras.Input((16, 16, 4), batch_size=1, name="switches")
    model = keras.Model([values_in, switches_in], unpool_layer()([values_in, switches_in]))
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield {"values": rng.uniform(-4, 4, (1, 8, 8, 4)).astype(np.float32),
                   "switches": rng.uniform(-4, 4, (1, 16, 16, 4)).astype(np.float32)}

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    data = conv.convert()
    assert float_compute_ops(data) == []
    ops = op_counts(data)
    assert ops["SELECT_V2"] == 4 and ops["DEPTH_TO_SPACE"] == 1 and ops["SPACE_TO_DEPTH"] == 1

    it = Interpreter(model_content=data)  # LiteRT's default resolver: XNNPACK applied
    it.allocate_tensors()
    by_name = {d["name"].split(":")[0]: d for d in it.get_input_details()}
    vd = next(d for n, d in by_name.items() if "values" in n)
    sd = next(d for n, d in by_name.items() if "switches" in n)
    (od,) = it.get_output_details()
    # Few distinct switch levels: most windows hold ties. Values away from the zero point.
    sq = rng.integers(-1, 2, (1, 16, 16, 4)).astype(np.int8)
    shape = (1, 8, 8, 4)
    vq = (vd["quantization"][1] + rng.integers(4, 100, shape) * rng.choice([-1, 1], shape)).astype(np.int8)
    it.set_tensor(vd["index"], vq)
    it.set_tensor(sd["index"], sq)
    it.invoke()
    got = it.get_tensor(od["index"]).astype(np.float64)
    (v_scale, v_zero), (o_scale, o_zero) = vd["quantization"], od["quantization"]
    want = reference_unpool((vq.astype(np.float64) - v_zero) * v_scale, sq.astype(np.float64))
    np.testing.assert_array_equal((got - o_zero) == 0, want == 0)  # the same positions
    np.testing.assert_allclose((got - o_zero) * o_scale, want, atol=o_scale / 2 + 1e-9)
    ties = sum(int((w == w.max()).sum() > 1) for w in sq.reshape(1, 8, 2, 8, 2, 4)
               .transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4))
    assert ties > 100  # the input exercised the tie rule


@pytest.mark.parametrize(("arch", "kw", "unpools"), [
    ("mobileunet", {}, ["dec_s16_upsample", "dec_s8_upsample", "dec_s4_upsample", "dec_s2_upsample"]),
    ("deeplabv3plus", {"atrous_rates": (1, 2)}, ["dec_upsample1", "dec_upsample2"]),
])
def test_both_architectures_unpool_and_reload_from_a_saved_file(tmp_path, arch, kw, unpools):
    tf, keras = keras_tf()
    model = build_model(arch, "mobilenetv2_035", 3, input_size=(64, 64), upsampling="unpool", **kw)
    found = [layer.name for layer in model.layers if type(layer).__name__ == "MaxUnpool2D"]
    assert found == unpools
    assert set(found) <= {layer.name for layer in decoder_layers(model)}
    assert type(model.get_layer("head_upsample")).__name__ == "UpSampling2D"  # no switches there
    for name in found:  # each unpooling has the channels of the encoder map it takes switches from
        layer = model.get_layer(name)
        switches = layer.input[1]
        assert layer.output.shape[1:] == switches.shape[1:]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    np.testing.assert_allclose(before.sum(-1), 1.0, atol=1e-5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path, compile=False).predict(x, verbose=0),
                                  before)
    keras.backend.clear_session()


def test_models_command_lists_the_unpooling_variant(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["models", "--arch", "mobileunet", "--backbone", "mobilenetv2_035", "--size", "64",
                 "--upsampling", "bilinear", "--upsampling", "unpool", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {r["upsampling"]: r for r in json.loads(out.read_text())}
    assert sorted(rows) == ["bilinear", "unpool"]
    assert "unpool" in text and "upsampling" in text.splitlines()[0]
    # the unpooling's 1x1 projections add parameters and MACs to the bilinear decoder
    assert rows["unpool"]["params"] > rows["bilinear"]["params"]
    assert rows["unpool"]["macs"] > rows["bilinear"]["macs"]
    assert main(["models", "--arch", "mobileunet", "--upsampling", "maxunpool"]) == 2
    assert "valid: bilinear, nearest, transpose, unpool" in capsys.readouterr().err


@pytest.fixture(scope="module")
def unpool_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("unpool")
    data = root / "data"
    synthetic.write_dataset(data, 3, (96, 128), seed=0, prefix="train")
    synthetic.write_dataset(data, 2, (80, 100), seed=10, prefix="val")
    train_s, val_s = load_split(str(data), ClassTable.load(data / "classes.csv"), "val_*")
    config = TrainConfig(num_classes=5, class_names=synthetic.CLASSES, upsampling="unpool", crop=64,
                         batch=4, stage1_epochs=0, stage2_epochs=3, steps_per_epoch=6, lr_head=3e-3,
                         val_tile=64, bn_batches=2, val_pattern="val_*", val_images=1, seed=3)
    run = root / "run"
    result = train(config, train_s, val_s, run, verbose=False)
    return {"root": root, "data": data, "run": run, "result": result, "train": train_s}


@pytest.mark.slow
def test_unpool_model_trains_on_generated_scenes(unpool_run):
    losses = [row["loss"] for row in unpool_run["result"].history]
    assert len(losses) == 3 and losses[-1] < 0.9 * losses[0]
    # a fresh interpreter (nothing registered yet) reloads the saved run's model
    code = ("import sys, numpy as np\n"
            "from edgeseg.training.runs import load_run\n"
            "model, config = load_run(sys.argv[1])\n"
            "assert config.upsampling == 'unpool'\n"
            "assert sum(type(l).__name__ == 'MaxUnpool2D' for l in model.layers) == 4\n"
            "print(model.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0).shape)\n")
    res = subprocess.run([sys.executable, "-c", code, str(unpool_run["run"])], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(1, 64, 64, 5)" in res.stdout


@pytest.mark.slow
def test_unpool_run_exports_with_parity_and_a_fully_integer_qat_model(unpool_run):
    """QAT model (ranges from the float model) -> every format -> parity through the runtime."""
    from edgeseg.quantization.qat import quantize
    from edgeseg.quantization.ranges import calibrate_ranges
    from edgeseg.quantization.store import save_qat
    from edgeseg.training.losses import get_loss
    from edgeseg.training.runs import load_run

    tf, _ = keras_tf()
    run, data, out = unpool_run["run"], unpool_run["data"], unpool_run["root"] / "out"
    model, _ = load_run(run)
    crops = np.stack([(s.image[:64, :64].astype(np.float32) - 127.5) / 127.5
                      for s in unpool_run["train"]])
    qat = quantize(model)
    calibrate_ranges(qat, model, [crops])
    assert [type(layer.layer).__name__ for layer in qat.layers
            if layer.name.startswith("quant_dec_s") and layer.name.endswith("_upsample")] \
        == ["MaxUnpool2D"] * 4
    # QAT trains through the unpooling: the projections before it get gradients
    masks = np.stack([s.mask[:64, :64] for s in unpool_run["train"]])
    with tf.GradientTape() as tape:
        probs = qat(crops, training=True)
        loss = get_loss("ce", 5)(masks, probs)
    proj = qat.get_layer("quant_dec_s8_upsample_proj_conv").trainable_weights
    grads = tape.gradient(loss, proj)
    assert np.isfinite(float(loss)) and all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads)
    save_qat(qat, run)

    common = ["--data", str(data), "--classes", str(data / "classes.csv")]
    assert main(["export", str(run), *common, "--out", str(out), "--calibration", "8",
                 "--formats", "tflite-fp32,tflite-qat-int8,onnx,openvino-fp32",
                 "--max-miou-drop", "10", "--min-quantized-agreement", "85"]) == 0
    parity = json.loads((out / "parity.json").read_text())
    rows = {a["format"]: a for a in parity["artifacts"]}
    assert parity["ok"] is True and parity["images"] == 2
    for name in ("tflite-fp32", "onnx", "openvino-fp32"):
        assert rows[name]["agreement"] >= 0.995, rows[name]
    assert rows["tflite-qat-int8"]["agreement"] >= 0.85, rows["tflite-qat-int8"]
    model = (out / "model_qat_int8.tflite").read_bytes()
    assert float_compute_ops(model) == []  # the QAT int8 graph is integer only
    ops = op_counts(model)
    assert ops["SELECT_V2"] == 4 * 4 and ops["DEPTH_TO_SPACE"] == 4  # four unpooling steps
    assert "DEQUANTIZE" not in ops and "TRANSPOSE_CONV" not in ops
