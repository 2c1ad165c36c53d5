"""edgeseg bench on tiny models: JSON structure, finite positive numbers, per-child memory,
the TensorFlow baseline's parity with the artifact it stands beside, parity.json reading.

No wall-clock thresholds: timings are only checked for being positive, finite and ordered.
"""

import importlib.util
import json
import math
import shutil
import sys

import numpy as np
import pytest
import tiny_models
from tiny_models import smooth_image

from edgeseg.bench.accuracy import ValidationSet, accuracy_section
from edgeseg.bench.artifacts import find_artifacts, format_of, read_parity
from edgeseg.bench.memory import run_child
from edgeseg.bench.timing import LatencyStats
from edgeseg.cli import main
from firmware_bridge.errors import EdgesegError

RASTER, TILE = 512, 64


@pytest.fixture(scope="module")
def artifacts(models, tmp_path_factory):
    """An export-like folder: the tiny NHWC ONNX model and its OpenVINO IR, named as export names them."""
    folder = tmp_path_factory.mktemp("bench_artifacts")
    shutil.copy(models["nhwc"], folder / "model.onnx")
    shutil.copy(models["nchw_xml"], folder / "model_fp32.xml")
    shutil.copy(models["nchw_xml"].with_suffix(".bin"), folder / "model_fp32.bin")
    return folder


@pytest.fixture(scope="module")
def bench(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    argv = ["bench", "--artifacts", str(artifacts), "--out", str(out),
            "--sections", "latency,throughput,memory,sizes", "--resolutions", str(TILE),
            "--tile-runs", "4", "--warmup", "1", "--raster-size", str(RASTER), "--sizes", "256,512",
            "--memory-format", "onnx", "--no-tf", "--no-export", "--quiet"]
    assert main(argv) == 0
    return out, json.loads((out / "bench.json").read_text())


def _positive(v):
    return isinstance(v, int | float) and math.isfinite(v) and v > 0


def test_latency_rows(bench):
    _, report = bench
    rows = report["latency"]["rows"]
    assert sorted(r["label"] for r in rows) == ["onnx", "openvino-fp32"]
    assert {r["backend"] for r in rows} == {"onnxruntime", "openvino"}
    for r in rows:
        lat = r["latency"]
        assert r["resolution"] == TILE and lat["runs"] == 4
        assert all(_positive(lat[k]) for k in ("p50", "p90", "mean", "min"))
        assert lat["min"] <= lat["p50"] <= lat["p90"]
        assert _positive(r["load_ms"]) and _positive(r["first_ms"])
        assert r["speedup"] is None  # no TensorFlow baseline asked for
    assert any("no TensorFlow baseline" in n for n in report["latency"]["notes"])


def test_throughput_rows(bench):
    _, report = bench
    sec = report["throughput"]
    assert sec["settings"]["raster"] == RASTER and sec["settings"]["tile"] == TILE
    assert len(sec["rows"]) == 2
    for r in sec["rows"]:
        assert _positive(r["seconds"]) and _positive(r["mpix_per_s"])
        # the rate is the raster's megapixels over the time, both rounded to 3 decimals: their
        # product is within 5e-4 * (rate + seconds) of the megapixels (more than 1 % when a fast
        # CPU takes 0.05 s); a rate of another raster size or in other units is off by 4x or 1000x
        rate, seconds = r["mpix_per_s"], r["seconds"]
        assert abs(rate * seconds - RASTER * RASTER / 1e6) <= 5e-4 * (rate + seconds) + 1e-6
        assert r["tile"] == TILE and r["overlap"] == 16  # the model's metadata overlap


def test_memory_rows(bench, artifacts):
    _, report = bench
    sec = report["memory"]
    assert sec["model"] == "onnx" and sec["model_path"] == str(artifacts / "model.onnx")
    assert [r["size"] for r in sec["rows"]] == [256, 512]
    assert [r["megapixels"] for r in sec["rows"]] == [0.066, 0.262]
    assert all(_positive(r["peak_rss_mb"]) and _positive(r["seconds"]) for r in sec["rows"])
    # opening the model alone needs no more than predicting with it
    assert 0 < sec["load_only_mb"] <= max(r["peak_rss_mb"] for r in sec["rows"])
    assert sec["ratio_largest_to_smallest"] == pytest.approx(
        sec["rows"][1]["peak_rss_mb"] / sec["rows"][0]["peak_rss_mb"], abs=1e-4)


def test_sizes_and_machine(bench, artifacts):
    _, report = bench
    rows = {r["label"]: r for r in report["sizes"]["rows"]}
    assert rows["onnx"]["size_bytes"] == (artifacts / "model.onnx").stat().st_size
    assert rows["openvino-fp32"]["size_bytes"] == sum(
        (artifacts / f).stat().st_size for f in ("model_fp32.xml", "model_fp32.bin"))
    assert rows["openvino-fp32"]["files"] == ["model_fp32.xml", "model_fp32.bin"]
    m = report["machine"]
    assert m["cores"] >= m["cores_usable"] >= 1 and m["cpu"] and m["python"]
    assert "numpy" in m["libraries"] and "onnxruntime" in m["libraries"]
    assert report["settings"]["threads"] == 2


def test_outputs_written(bench):
    out, report = bench
    md = (out / "bench.md").read_text()
    for heading in ("## Per-tile latency", "## Tiled throughput", "## Peak memory", "## Artifact sizes"):
        assert heading in md
    assert "| onnx | onnxruntime |" in md
    for name in ("latency.png", "throughput.png", "memory.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["plots"] == {"latency": "latency.png", "throughput": "throughput.png",
                               "memory": "memory.png"}


def test_rerun_keeps_other_sections(bench, artifacts, tmp_path):
    out, first = bench
    rerun = tmp_path / "rerun"
    shutil.copytree(out, rerun)
    assert main(["bench", "--artifacts", str(artifacts), "--out", str(rerun), "--sections", "sizes",
                 "--no-export", "--quiet"]) == 0
    second = json.loads((rerun / "bench.json").read_text())
    assert second["latency"]["rows"] == first["latency"]["rows"]
    assert second["latency"]["earlier_run"] is True and "earlier_run" not in second["sizes"]
    md = (rerun / "bench.md").read_text()
    assert "by an earlier run" in md
    assert second["sizes"]["command"] != second["latency"]["command"]
    assert f"- `{second['sizes']['command']}`: sizes" in md
    assert f"- `{first['latency']['command']}`: " in md


def test_child_peaks_are_their_own():
    """Each measurement is one child's own peak: not the largest child so far, and not this
    (large) process's memory, which a plain fork + exec would carry into ru_maxrss."""
    ballast = np.ones(400 * 2**20 // 8)  # this process holds 400 MiB while measuring
    big = run_child([sys.executable, "-c", "import numpy as np; a = np.ones(300 * 2**20 // 8); a += 1"])
    small = run_child([sys.executable, "-c", "pass"])
    assert ballast.sum() > 0
    assert big.returncode == 0 and small.returncode == 0
    assert big.peak_rss_mb >= 300 and 0 < small.peak_rss_mb < 100
    assert run_child([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3


def test_latency_stats_exact():
    s = LatencyStats.from_ms([4.0, 1.0, 3.0, 2.0])
    assert (s.p50, s.p90, s.mean, s.min, s.runs) == (2.5, 3.7, 2.5, 1.0, 4)
    with pytest.raises(ValueError):
        LatencyStats.from_ms([])


@pytest.mark.parametrize("name, fmt", [
    ("model_qat_int8.tflite", "tflite-qat-int8"), ("model_int8.tflite", "tflite-int8"),
    ("model_fp16.tflite", "tflite-fp16"), ("model_fp32.xml", "openvino-fp32"),
    ("model_int8.xml", "openvino-int8"), ("model.onnx", "onnx"), ("model.cc", "c-array"),
    ("scene.tif", ""),
])
def test_format_of(name, fmt, tmp_path):
    assert format_of(tmp_path / name) == fmt


def test_no_artifacts_is_a_clear_error(tmp_path, capsys):
    code = main(["bench", "--out", str(tmp_path / "out"), "--sections", "latency", "--no-export"])
    assert code == 2
    assert "no exported models" in capsys.readouterr().err


def test_missing_data_says_how_to_give_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGESEG_DATA", raising=False)
    assert main(["bench", "--out", str(tmp_path / "out"), "--sections", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert "pass --data DIR --classes FILE (or set EDGESEG_DATA and EDGESEG_CLASSES)" in err
    monkeypatch.setenv("EDGESEG_DATA", str(tmp_path / "nowhere"))
    assert main(["bench", "--out", str(tmp_path / "out"), "--sections", "accuracy"]) == 2
    assert f"{tmp_path / 'nowhere'}: no dataset here" in capsys.readouterr().err


def test_accuracy_from_parity_json(artifacts, tmp_path):
    """parity.json as export writes it (export.parity's own classes) is read, not recomputed."""
    export_parity = pytest.importorskip("export.parity")
    folder = tmp_path / "export"
    shutil.copytree(artifacts, folder)
    row = export_parity.ParityRow("onnx", "model.onnx", "fp32", 4574, 0.999, 0.61, 0.5, True, "r", 1.0)
    export_parity.ParityReport(0.615, [row], images=9).write(folder / "parity.json")
    found = find_artifacts([folder])
    parity = read_parity(folder)
    assert parity.keras_miou == 0.615 and parity.images == 9
    rows, notes = accuracy_section(found, {folder: parity}, None, 2, log=lambda s: None)
    by = {r.label: r for r in rows}
    assert by["keras"].miou == 0.615 and by["onnx"].miou == 0.61 and by["onnx"].miou_drop == 0.5
    assert by["onnx"].source == "parity.json" and by["onnx"].images == 9
    assert "openvino-fp32" not in by and any("openvino-fp32" in n for n in notes)


def _tiny_keras():
    """The tiny network of tiny_models in tf-keras, NHWC, 64x64, with the same weights."""
    from edgeseg.tf_env import tf_keras

    _, keras = tf_keras()
    w = tiny_models.weights()
    hwio = {k: np.transpose(v, (2, 3, 1, 0)) for k, v in w.items() if k.startswith("w")}
    inp = keras.Input((TILE, TILE, 3))
    c1 = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    c2 = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="c2")(c1)
    g = keras.layers.Conv2D(8, 1, name="g")(keras.layers.GlobalAveragePooling2D(keepdims=True)(c1))
    r2 = keras.layers.ReLU()(keras.layers.Add()([c2, g]))
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.Conv2D(tiny_models.K, 1, name="c3")(r2)))
    for layer, (wk, bk) in {"c1": ("w1", "b1"), "c2": ("w2", "b2"), "g": ("wg", "bg"),
                            "c3": ("w3", "b3")}.items():
        model.get_layer(layer).set_weights([hwio[wk], w[bk]])
    return model


@pytest.fixture(scope="module")
def keras_model():
    if importlib.util.find_spec("tf_keras") is None:  # not importorskip: tf_env must import it first
        pytest.skip("the TensorFlow baseline needs tf-keras (edgeseg[train])")
    return _tiny_keras()


def test_tensorflow_baseline_matches_the_artifact(keras_model, artifacts):
    """The baseline swaps only the backend: same pixels in, the same probabilities out."""
    from edgeseg.bench.keras_backend import keras_segmenter_like
    from edgeseg.bench.speed import bench_tile, latency_section
    from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

    onnx = artifacts / "model.onnx"
    tf_seg = keras_segmenter_like(keras_model, onnx, SegmenterOptions(tile=TILE))
    ort_seg = Segmenter(onnx, options=SegmenterOptions(tile=TILE))
    assert tf_seg.backend.name == "tensorflow" and tf_seg.overlap == ort_seg.overlap == 16
    tile = bench_tile(TILE)
    # TensorFlow's and ONNX Runtime's kernels round differently: up to prob_atol (4.4e-6 on this tile)
    np.testing.assert_allclose(tf_seg.scores(tile), ort_seg.scores(tile),
                               atol=tiny_models.prob_atol(tile[0]))
    image = smooth_image(150, 170)
    assert np.mean(tf_seg.predict_tiled(image).mask == ort_seg.predict_tiled(image).mask) >= 0.999

    rows, notes = latency_section(find_artifacts([artifacts]), (TILE,), 2, 3, 1,
                                  keras=lambda size: keras_model, log=lambda s: None)
    by = {r.label: r for r in rows}
    assert by["keras (TensorFlow)"].speedup == 1.0 and not notes
    for label in ("onnx", "openvino-fp32"):
        r = by[label]
        # the ratio rounded to 2 decimals: within 0.005 whatever its size (below 0.5, where
        # TensorFlow's kernels are the faster ones on a CPU, that is more than 1 %)
        ratio = by["keras (TensorFlow)"].latency.p50 / r.latency.p50
        assert r.speedup == pytest.approx(ratio, abs=0.005 + 1e-12)


def test_computed_accuracy_with_agreement(keras_model, artifacts):
    """Artifacts without parity.json are scored here; the truth is the ONNX model's own mask."""
    from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

    images = [smooth_image(150, 170, seed=1), smooth_image(100, 90, seed=2)]
    seg = Segmenter(artifacts / "model.onnx", options=SegmenterOptions(tile=TILE))
    truths = [seg.predict_tiled(im).mask for im in images]
    val = ValidationSet(images, truths, tiny_models.K, ["a", "b"])
    found = [a for a in find_artifacts([artifacts]) if a.label == "onnx"]
    # the dynamic ONNX model tiles at its metadata's tile size (64), as the Keras model does
    rows, notes = accuracy_section(found, {}, lambda: val, 2, keras=lambda size: keras_model,
                                   log=lambda s: None)
    by = {r.label: r for r in rows}
    assert by["onnx"].miou == 1.0 and by["onnx"].source == "computed" and by["onnx"].images == 2
    assert by["keras"].source == "computed" and by["keras"].resolution == TILE
    assert by["onnx"].agreement >= 0.999 and by["keras"].miou >= 0.99
    assert by["onnx"].miou_drop == pytest.approx(100 * (by["keras"].miou - 1.0))


def test_bench_options_refuse_bad_settings():
    from edgeseg.bench import BenchOptions

    with pytest.raises(EdgesegError, match="tile_runs=0"):
        BenchOptions(tile_runs=0)
    with pytest.raises(EdgesegError, match="unknown section"):
        BenchOptions(sections=("speed",))
