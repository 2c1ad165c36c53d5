"""``edgeseg-run predict / validate / bench`` end to end, and a runtime free of TensorFlow."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from tiny_models import INT8_SIZE, smooth_image, tflite_int8_bytes

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.cli import main
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions


def test_predict_png_and_geotiff(models, tmp_path, capsys):
    pytest.importorskip("rasterio")
    from firmware_bridge.io.synthetic_raster import write_synthetic_raster

    Image.fromarray(smooth_image(100, 140)).save(tmp_path / "a.png")
    write_synthetic_raster(tmp_path / "b.tif", 300, 3, block=128)
    out = tmp_path / "out"
    code = main(["predict", str(models["nchw"]), str(tmp_path / "a.png"), str(tmp_path / "b.tif"),
                 "--out", str(out), "--tile", "64", "--overlap", "16", "--batch", "4",
                 "--overlay", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png", "b_mask.tif"]
    assert capsys.readouterr().out.count(str(out)) == 3


def test_predict_reports_bad_inputs(models, tmp_path, capsys):
    trunc = tmp_path / "t.onnx"
    trunc.write_bytes(models["nchw"].read_bytes()[:300])
    assert main(["predict", str(trunc), "x.png", "--out", str(tmp_path / "o")]) == 2
    assert "not a loadable ONNX model" in capsys.readouterr().err
    Image.fromarray(np.zeros((50, 50, 2), np.uint8), mode="LA").save(tmp_path / "grey.png")
    code = main(["predict", str(models["nchw"]), str(tmp_path / "grey.png"),
                 "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 1 and "2 band(s), the model takes 3" in capsys.readouterr().err
    assert list((tmp_path / "o").iterdir()) == []


def test_predict_with_reference_kernels_gives_litert_reference_mask(tmp_path, capsys):
    """One tile of the int8 model: the mask is the argmax of LiteRT's BUILTIN_REF scores."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = tflite_int8_bytes()
    model = tmp_path / "int8.tflite"
    model.write_bytes(data)
    image = smooth_image(INT8_SIZE, INT8_SIZE, seed=7)
    Image.fromarray(image).save(tmp_path / "tile.png")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(tmp_path / "tile.png"), "--out", str(out),
                 "--kernels", "reference", "--quiet"]) == 0
    mask = np.asarray(Image.open(out / "tile_mask.png"))
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], Segmenter(model).preprocess(image[None]))
    it.invoke()
    scores = it.get_tensor(it.get_output_details()[0]["index"])[0]
    np.testing.assert_array_equal(mask, np.argmax(scores, axis=-1))
    assert main(["bench", str(model), "--kernels", "reference", "--runs", "2", "--size", "48"]) == 0
    assert "litert (reference kernels) int8 tile 24x24" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["predict", "validate", "bench"])
def test_reference_kernels_are_refused_on_an_onnx_model(models, tmp_path, capsys, command):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.fromarray(smooth_image(64, 64)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "masks" / "a.png")
    args = {"predict": [str(tmp_path / "images" / "a.png"), "--out", str(tmp_path / "o")],
            "validate": ["--data", str(tmp_path)], "bench": []}[command]
    assert main([command, str(models["nchw"]), *args, "--kernels", "reference"]) == 2
    err = capsys.readouterr().err
    assert "--kernels reference: onnxruntime has only its default kernels" in err
    assert "LiteRT's: run the model's .tflite" in err


def _dataset(root, seg, colours=None):
    """Masks = the model's own tiled prediction, with known corruptions."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    flipped = counted = 0
    for i, shape in enumerate([(90, 120), (70, 150)]):
        image = smooth_image(*shape, seed=20 + i)
        mask = seg.predict_tiled(image).mask.copy()
        mask[:10, :] = IGNORE_INDEX  # ignored rows
        mask[10:20, :40] = (mask[10:20, :40] + 1) % 4  # wrong on purpose
        flipped += 10 * 40
        counted += (shape[0] - 10) * shape[1]
        Image.fromarray(image).save(root / "images" / f"s{i}.png")
        if colours is None:
            Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
        else:
            lut = np.zeros((256, 3), np.uint8)
            lut[:4] = colours
            lut[IGNORE_INDEX] = (155, 155, 155)
            Image.fromarray(lut[mask]).save(root / "masks" / f"s{i}.png")
    (root / "images" / "orphan.png").write_bytes((root / "images" / "s0.png").read_bytes())
    return 1 - flipped / counted


@pytest.mark.parametrize("colour_masks", [False, True])
def test_validate_scores_known_errors(models, tmp_path, capsys, colour_masks):
    opts = ["--tile", "64", "--overlap", "16"]
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    expected_acc = _dataset(tmp_path / "data", seg, colours if colour_masks else None)
    if colour_masks:
        table = tmp_path / "classes.csv"
        table.write_text("name,colour,ignore\n" + "".join(
            f"c{i},#{r:02X}{g:02X}{b:02X},0\n" for i, (r, g, b) in enumerate(colours))
            + "Unlabeled,#9B9B9B,1\n")
        opts += ["--classes", str(table)]
    report = tmp_path / "scores.json"
    code = main(["validate", str(models["nchw"]), "--data", str(tmp_path / "data"),
                 "--json", str(report), "--quiet", *opts])
    assert code == 1  # the orphan image is a problem, reported, not fatal
    out = capsys.readouterr()
    assert "orphan.png" in out.err and "mean" in out.out
    data = json.loads(report.read_text())
    assert data["images"] == 2 and data["backend"] == "onnxruntime"
    assert data["pixel_accuracy"] == pytest.approx(expected_acc, abs=1e-6)
    assert list(data["per_class"]) == ["c0", "c1", "c2", "c3"]
    assert np.asarray(data["confusion_matrix"]).sum() == round(sum(
        (h - 10) * w for h, w in [(90, 120), (70, 150)]))


def test_validate_rejects_class_count_mismatch(models, tmp_path, capsys):
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16))
    _dataset(tmp_path / "data", seg)
    table = tmp_path / "three.csv"
    table.write_text("name,colour,ignore\na,#010101,0\nb,#020202,0\nc,#030303,0\n")
    assert main(["validate", str(models["foreign"]), "--data", str(tmp_path / "data"),
                 "--classes", str(table)]) == 2
    assert "4 channel(s)" in capsys.readouterr().err


def test_bench_reports_numbers(models, tmp_path, capsys):
    pytest.importorskip("rasterio")
    report = tmp_path / "bench.json"
    assert main(["bench", str(models["nchw"]), "--tile", "64", "--overlap", "16", "--runs", "5",
                 "--size", "256", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["backend"] == "onnxruntime" and data["tile"] == [64, 64]
    lat = data["tile_latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] and lat["runs"] == 5
    assert data["load_ms"] > 0 and data["first_inference_ms"] > 0
    assert data["raster"]["megapixels"] == pytest.approx(0.065536)
    assert data["raster"]["mode"] == "streamed GeoTIFF" and data["raster"]["mpix_per_s"] > 0
    assert data["peak_rss_mb"] >= data["raster"]["peak_rss_before_mb"] > 0
    assert data["raster"]["tiles"] == 25  # 5 x 5 tile positions, each predicted once
    stages = data["raster"]["stage_ms_per_tile"]
    assert list(stages) == ["read", "normalise", "model", "scores", "blend", "argmax", "write",
                            "idle"]
    assert all(v >= 0 for v in stages.values()) and stages["model"] > 0
    out = capsys.readouterr().out
    assert "MPix/s" in out and "per tile, ms (25 tiles" in out and "own rate" in out


FORBIDDEN = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tflite_runtime")


def test_runtime_never_imports_tensorflow(models, tmp_path, shared_path_or_none):
    """Import every firmware_bridge module and predict on all three backends in a fresh
    interpreter; TensorFlow must never enter sys.modules."""
    selfie = shared_path_or_none
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import numpy as np
        import firmware_bridge
        for m in pkgutil.walk_packages(firmware_bridge.__path__, "firmware_bridge."):
            importlib.import_module(m.name)
        from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions
        from firmware_bridge.cli import main
        img = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
        for path in {[str(models["nchw"]), str(models["nchw_xml"])]!r}:
            Segmenter(path, options=SegmenterOptions(tile=64, overlap=16)).predict_tiled(img)
        selfie = {selfie!r}
        if selfie:
            Segmenter(selfie, options=SegmenterOptions(mean=[0.0], std=[255.0])).predict_tiled(img)
        from PIL import Image
        Image.fromarray(img).save({str(tmp_path / "i.png")!r})
        assert main(["predict", {str(models["uint8"])!r}, {str(tmp_path / "i.png")!r},
                     "--out", {str(tmp_path / "o")!r}, "--quiet"]) == 0
        bad = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
        print("FORBIDDEN:", bad)
        print("litert" if "ai_edge_litert" in sys.modules else "no-litert")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "FORBIDDEN: []" in run.stdout
    if selfie:
        assert "litert" in run.stdout.split()


@pytest.fixture
def shared_path_or_none(request):
    """The MediaPipe model when ../shared is there (the test runs without it too)."""
    try:
        shared = request.getfixturevalue("shared_dir")
    except pytest.skip.Exception:
        return None
    path = shared / "models" / "mediapipe_selfie_segmentation" / "selfie_segmentation.tflite"
    return str(path) if path.is_file() else None
