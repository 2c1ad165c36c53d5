"""Models as three publishers ship them, end to end through ``edgeseg-run``.

``docs/published_models.md`` measures three published models; they cannot be downloaded here, so
each is stood in for by a tiny model that carries the same conventions:

* TFLite, as the TFLite Support DeepLabV3 (``deeplabv3.tflite``): NHWC float input of a fixed
  odd size, RGB normalised ``(x - 127.5) / 127.5`` as its Support metadata says, logits out (no
  softmax), the class names in ``labelmap.txt`` zipped onto the file. The publisher's mask is the
  Task Library ``ImageSegmenter``'s: the first channel above the running maximum, which starts
  at 0 (the plain argmax wherever a logit is positive, as on every pixel of the publisher's
  test image).
* ONNX, as the segmentation_models.pytorch skin / clothes / hair model: NCHW input of a fixed
  size, RGB ``(x / 255 - ImageNet mean) / ImageNet std``, one sigmoid per class, no
  ``metadata_props``; the publisher thresholds every class at 0.5 on its own.
* OpenVINO IR, as Open Model Zoo's road-segmentation-adas-0001: NCHW input of a fixed
  non-square size, BGR pixels 0..255 without normalisation, softmax out; with and without
  ``rt_info/model_info`` (labels, mean and scale values).

Each model runs directly with the publisher's preprocessing, then through ``predict`` with no
flags where the model says everything and otherwise only the flags that restate the
publisher's preprocessing; the masks must be the same. ``validate`` scores the predicted masks
as the truth (1.0), and ``bench`` runs with the same options.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_publisher_metadata import support_metadata
from tiny_models import _onnx_model, smooth_image, tflite_bytes, to_openvino, weights

from firmware_bridge.cli import main
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable

VOC_LIKE = ["background", "aeroplane", "bicycle", "bird", "boat"]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
IMAGENET_FLAGS = ["--mean", "123.675,116.28,103.53", "--std", "58.395,57.12,57.375"]
ROAD = ["BG", "road", "curb", "mark"]
LOGIT_SHIFT = 4.0
"""Added to every logit of the TFLite stand-in: a positive logit at every pixel, as DeepLab has."""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``edgeseg-run ARGV``: exit code, stdout, stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assumed(err: str) -> list[str]:
    """The lines naming assumed values."""
    return [line for line in err.splitlines() if "so assumed:" in line]


def mask_of(path: Path) -> np.ndarray:
    """A predicted mask's class indices (palette PNGs keep them as pixel values)."""
    return np.asarray(Image.open(path))


def validate_and_bench(capsys, tmp_path: Path, model: Path, image: Path, mask: Path,
                       flags: list[str], tile: str) -> None:
    """``validate`` scores the predicted mask as the truth at 1.0; ``bench`` runs the model."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "images" / "a.png").write_bytes(image.read_bytes())
    (data / "masks" / "a.png").write_bytes(mask.read_bytes())  # the colour PNG predict wrote
    report = tmp_path / "scores.json"
    code, out, err = run(capsys, "validate", model, "--data", data, "--quiet", "--json", report,
                         *flags)
    assert code == 0, err
    scores = json.loads(report.read_text())
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0, out
    bench_json = tmp_path / "bench.json"
    code, out, err = run(capsys, "bench", model, "--runs", "2", "--size", "96", "--json",
                         bench_json, *flags)
    assert code == 0, err
    assert f"tile {tile}" in out, out
    assert json.loads(bench_json.read_text())["model"] == str(model)


# ---------------------------------------------------------------- TFLite Support: DeepLabV3


def deeplab_like_tflite(path: Path, k: int = 5, size: int = 33) -> Path:
    """A conv1x1 TFLite model with DeepLabV3's input, output and Support metadata conventions."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes(k=k, size=size)), 0)
    graph = model.subgraphs[0]
    graph.operators, graph.outputs = graph.operators[:1], [3]  # the conv's logits, no softmax
    bias = (weights(k)["b3"] + LOGIT_SHIFT).astype(np.float32)
    model.buffers[2].data = np.frombuffer(bias.tobytes(), np.uint8)
    meta = schema.BufferT()
    meta.data = np.frombuffer(support_metadata([127.5], [127.5], labels_file="labelmap.txt"),
                              np.uint8)
    model.buffers.append(meta)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("labelmap.txt", "\n".join(VOC_LIKE) + "\n")
    path.write_bytes(bytes(convert_object_to_bytearray(model)) + archive.getvalue())
    return path


def task_library_mask(model: Path, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The publisher's mask: LiteRT on ``(x - 127.5) / 127.5``, ImageSegmenter's category mask.

    Returns:
        The mask and the logits.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(model))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], ((rgb.astype(np.float32) - 127.5) / 127.5)[None])
    interpreter.invoke()
    logits = interpreter.get_tensor(out["index"])[0]
    mask = np.zeros(logits.shape[:2], np.uint8)
    best = np.zeros(logits.shape[:2], np.float32)  # max_confidence starts at 0
    for d in range(logits.shape[-1]):
        higher = logits[..., d] > best
        mask[higher], best[higher] = d, logits[..., d][higher]
    return mask, logits


def test_tflite_support_model_predicts_the_task_library_mask_without_flags(tmp_path, capsys):
    pytest.importorskip("flatbuffers")
    model = deeplab_like_tflite(tmp_path / "deeplabv3.tflite")
    rgb = smooth_image(33, 33, seed=11, noise=40.0)  # the model's size: no resizing either side
    image = tmp_path / "photo.png"
    Image.fromarray(rgb).save(image)
    expected, logits = task_library_mask(model, rgb)
    assert (logits.max(-1) > 0).all()  # as on the publisher's image: its rule is the argmax
    assert len(np.unique(expected)) >= 3

    code, out, err = run(capsys, "predict", model, image, "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    written = tmp_path / "o" / "photo_mask.png"
    assert np.array_equal(mask_of(written), expected)
    # labels, normalisation and RGB come from the metadata; logits-or-softmax is unsaid, and
    # so is whether images of another size are tiled or resized
    assert assumed(err) == ["edgeseg-run: deeplabv3.tflite: not in the model's metadata and not "
                            "given, so assumed: output softmax (--output-kind); resize tile "
                            "(--resize)"]

    code, out, err = run(capsys, "predict", model, image, "--out", tmp_path / "l", "--quiet",
                         "--output-kind", "logits", "--resize", "stretch")
    assert code == 0 and assumed(err) == [], err
    assert np.array_equal(mask_of(tmp_path / "l" / "photo_mask.png"), expected)
    # the metadata's normalisation is the one applied: another gives another mask
    run(capsys, "predict", model, image, "--out", tmp_path / "raw", "--quiet", "--mean", "0",
        "--std", "1")
    assert not np.array_equal(mask_of(tmp_path / "raw" / "photo_mask.png"), expected)
    validate_and_bench(capsys, tmp_path, model, image, written, ["--output-kind", "logits"],
                       "33x33")


# ---------------------------------------------------------------- ONNX: multilabel sigmoid


def smp_like_onnx(path: Path, size: int = 32) -> Path:
    """The tiny network, NCHW at a fixed size, one sigmoid per class, no metadata_props."""
    onnx = pytest.importorskip("onnx")
    onnx.save(_onnx_model(weights(k=3), output="sigmoid", size=(size, size)), str(path))
    return path


def smp_demo_probabilities(model: Path, rgb: np.ndarray) -> np.ndarray:
    """The publisher's demo: ``(x / 255 - mean) / std`` in RGB, CHW; ``HxWx3`` probabilities."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = (rgb / 255 - IMAGENET_MEAN) / IMAGENET_STD
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    return session.run(None, {session.get_inputs()[0].name: x})[0][0].transpose(1, 2, 0)


def test_onnx_multilabel_model_marks_the_publishers_pixels(tmp_path, capsys):
    model = smp_like_onnx(tmp_path / "skin_clothes_hair.onnx")
    rgb = smooth_image(32, 32, seed=5, noise=40.0)
    image = tmp_path / "person.png"
    Image.fromarray(rgb).save(image)
    probs = smp_demo_probabilities(model, rgb)
    passed = probs > 0.5  # the demo's score threshold, class by class
    assert passed.any(-1).sum() not in (0, passed.shape[0] * passed.shape[1])
    assert (passed.sum(-1) > 1).any()  # some pixels are in two classes

    code, out, err = run(capsys, "predict", model, image, "--out", tmp_path / "bare", "--quiet")
    assert code == 0, err
    line = assumed(err)
    assert len(line) == 1
    for said in ("normalisation mean 127.5 std 127.5 (--mean/--std/--scale)",
                 "bands RGB as stored (--bands)", "output softmax (--output-kind)",
                 "classes class_0,class_1,class_2 (--classes)", "resize tile (--resize)"):
        assert said in line[0]

    labels = tmp_path / "labels.txt"
    labels.write_text("skin\nclothes\nhair\n")
    flags = [*IMAGENET_FLAGS, "--classes", labels, "--output-kind", "multilabel", "--bands",
             "1,2,3", "--resize", "stretch"]
    code, out, err = run(capsys, "predict", model, image, "--out", tmp_path / "o", "--quiet",
                         *flags)
    assert code == 0 and assumed(err) == [], err
    written = tmp_path / "o" / "person_mask.png"
    mask = mask_of(written)
    assert np.array_equal(mask > 0, passed.any(-1))  # the same pixels carry a label
    for c in range(3):  # each pixel's label is one of the publisher's classes there ...
        assert passed[..., c][mask == c + 1].all()
    # ... the one of highest probability
    assert np.array_equal(mask, np.where(passed.any(-1), probs.argmax(-1) + 1, 0))
    run(capsys, "predict", model, image, "--out", tmp_path / "default", "--quiet",
        "--classes", labels, "--output-kind", "multilabel")  # 127.5 normalisation: another mask
    assert not np.array_equal(mask_of(tmp_path / "default" / "person_mask.png"), mask)
    validate_and_bench(capsys, tmp_path, model, image, written, flags, "32x32")


# ---------------------------------------------------------------- OpenVINO IR: BGR 0..255


def omz_like_ir(folder: Path, model_info: dict[str, str] | None) -> Path:
    """A softmax IR taking BGR 0..255 at a fixed 24x40 (Open Model Zoo's layout), with
    ``model_info`` in its rt_info when given."""
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    w = weights(k=4)
    w["w1"] = w["w1"] / 127.5  # pixels go in as they are
    src = folder / "road.onnx"
    onnx.save(_onnx_model(w, size=(24, 40)), str(src))
    xml = to_openvino(src, folder / "road-segmentation.xml")
    if model_info:
        model = ov.Core().read_model(str(xml))
        for key, value in model_info.items():
            model.set_rt_info(value, ["model_info", key])
        xml = folder / "road-segmentation-info.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def omz_notebook_mask(xml: Path, rgb: np.ndarray) -> np.ndarray:
    """The publisher's notebook: BGR pixels, HWC to NCHW, no normalisation, argmax."""
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(xml), "CPU")
    bgr = rgb[..., ::-1]
    result = compiled([bgr.transpose(2, 0, 1)[None].astype(np.float32)])[compiled.output(0)]
    return np.argmax(result, axis=1)[0].astype(np.uint8)


@pytest.mark.parametrize("with_info", [False, True], ids=["no-model-info", "model-info"])
def test_openvino_bgr_model_gives_the_notebooks_mask(tmp_path, capsys, with_info):
    info = {"labels": " ".join(ROAD), "mean_values": "0 0 0", "scale_values": "1 1 1"}
    xml = omz_like_ir(tmp_path, info if with_info else None)
    rgb = smooth_image(24, 40, seed=7, noise=40.0)
    image = tmp_path / "road.png"
    Image.fromarray(rgb).save(image)
    expected = omz_notebook_mask(xml, rgb)
    assert len(np.unique(expected)) >= 2
    labels = tmp_path / "road_labels.txt"
    labels.write_text("\n".join(ROAD) + "\n")

    code, out, err = run(capsys, "predict", xml, image, "--out", tmp_path / "bare", "--quiet")
    assert code == 0, err
    line = assumed(err)
    assert len(line) == 1 and "bands RGB as stored (--bands)" in line[0], err
    if with_info:  # labels and normalisation read from model_info
        assert "normalisation" not in line[0] and "classes" not in line[0]
    else:
        assert "normalisation mean 127.5 std 127.5" in line[0]
        assert "classes class_0,class_1,class_2,class_3 (--classes)" in line[0]

    flags = ["--bands", "3,2,1", "--output-kind", "softmax", "--resize", "stretch"]
    if not with_info:
        flags += ["--mean", "0", "--std", "1", "--classes", labels]
    code, out, err = run(capsys, "predict", xml, image, "--out", tmp_path / "o", "--quiet",
                         *flags)
    assert code == 0 and assumed(err) == [], err
    written = tmp_path / "o" / "road_mask.png"
    assert np.array_equal(mask_of(written), expected)
    rgb_flags = [f if f != "3,2,1" else "1,2,3" for f in flags]  # the band order matters here
    run(capsys, "predict", xml, image, "--out", tmp_path / "rgb", "--quiet", *rgb_flags)
    assert not np.array_equal(mask_of(tmp_path / "rgb" / "road_mask.png"), expected)
    validate_and_bench(capsys, tmp_path, xml, image, written, flags, "24x40")


# ---------------------------------------------------------------- masks read back


def test_a_predicted_colour_mask_of_a_model_without_colours_reads_back():
    """predict writes made-up colours for classes without one; validate reads them back."""
    table = ClassTable(["none", "skin", "clothes"], [])
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    assert np.array_equal(table.decode_mask(table.colourise(labels)), labels)
    mixed = ClassTable(["a", "b"], [(1, 2, 3), None])  # a colour of the table wins
    assert np.array_equal(mixed.decode_mask(mixed.colourise(labels[:1, :])), labels[:1, :])
    stranger = table.colourise(labels)
    stranger[0, 0] = (128, 0, 0)  # VOC's aeroplane: no colour of this table
    with pytest.raises(EdgesegError, match="#800000 .1 pixels. is none of the colours edgeseg "
                                           "writes masks in, and the class table lists no"):
        table.decode_mask(stranger, "m.png")
    ignored = table.decode_mask(stranger, unknown_to_ignore=True)
    assert ignored[0, 0] == 255 and np.array_equal(ignored.ravel()[1:], labels.ravel()[1:])
