"""Models edgeseg did not export: labels files, TFLite Support metadata, ONNX ``metadata_props``,
OpenVINO ``model_info``, the precedence flags > edgeseg > publisher > defaults, the one line of
assumed values, and an ONNX model loading without the ``onnx`` package."""

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import _onnx_model, metadata, smooth_image, tflite_bytes, weights

from firmware_bridge.cli import main
from firmware_bridge.commands.modelargs import class_names_arg
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable, parse_labels, read_labels
from firmware_bridge.runtime import onnxfile
from firmware_bridge.runtime.publisher import (
    parse_names,
    parse_numbers,
    read_onnx_props,
    read_openvino_model_info,
    read_publisher_metadata,
    read_tflite_support,
)
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
LABELS = "background\r\n\n  cat \n\ndog\n"


# ---------------------------------------------------------------- labels files


def test_labels_text_one_name_per_line_blank_lines_ignored(tmp_path):
    assert parse_labels("\ufeff" + LABELS) == ["background", "cat", "dog"]
    with pytest.raises(EdgesegError, match="no class names"):
        parse_labels("\n  \n")
    path = tmp_path / "labels.txt"
    path.write_text(LABELS, encoding="utf-8")
    assert read_labels(path) == ["background", "cat", "dog"]
    assert ClassTable.load(path).names == ["background", "cat", "dog"]
    # --classes labels.txt is the file's names, not one class called "labels.txt"
    assert class_names_arg(str(path)) == ["background", "cat", "dog"]
    assert class_names_arg("a, b") == ["a", "b"]
    with pytest.raises(EdgesegError, match="labels file not found"):
        class_names_arg(str(tmp_path / "missing.txt"))
    twice = tmp_path / "twice.txt"
    twice.write_text("cat\ndog\ncat\n")
    with pytest.raises(EdgesegError, match="cat is named twice"):
        class_names_arg(str(twice))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00c")
    with pytest.raises(EdgesegError, match="not a UTF-8 text file"):
        read_labels(binary)


def test_metadata_values_in_the_forms_exporters_write():
    assert parse_names("{0: 'person', 1: 'bicycle', 2: 'traffic light'}") == [
        "person", "bicycle", "traffic light"]  # Ultralytics' names
    assert parse_names('["sky", "road"]') == ["sky", "road"]
    assert parse_names("sky, road,car") == ["sky", "road", "car"]
    assert parse_names("sky\n\nroad\n") == ["sky", "road"]
    assert parse_names('["sky", ""]') is None and parse_names(" ") is None
    assert parse_names("traffic light") == ["traffic light"]
    assert parse_names("background person car", " ") == ["background", "person", "car"]
    assert parse_names("{1: 'a', 2: 'b'}") is None  # indices must be 0..n-1
    assert parse_numbers("[123.675, 116.28, 103.53]") == MEAN
    assert parse_numbers("58.395 57.12 57.375") == STD
    assert parse_numbers("nan") is None and parse_numbers("abc") is None


# ---------------------------------------------------------------- TFLite Support metadata


def support_metadata(mean, std, labels_file: str | None = "labels.txt", colour_space: int = 1
                     ) -> bytes:
    """A TFLite Support metadata flatbuffer (metadata_schema.fbs, "M001"), written here with the
    flatbuffers builder: input image properties and normalisation, output labels file."""
    flatbuffers = pytest.importorskip("flatbuffers")
    b = flatbuffers.Builder(0)

    def vector(offsets):
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def floats(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(v)
        return b.EndVector()

    mean_v, std_v = floats(mean), floats(std)
    b.StartObject(2)  # NormalizationOptions {mean, std}
    b.PrependUOffsetTRelativeSlot(0, mean_v, 0)
    b.PrependUOffsetTRelativeSlot(1, std_v, 0)
    norm = b.EndObject()
    b.StartObject(2)  # ProcessUnit {options_type, options}
    b.PrependUint8Slot(0, 1, 0)  # NormalizationOptions
    b.PrependUOffsetTRelativeSlot(1, norm, 0)
    unit = b.EndObject()
    b.StartObject(2)  # ImageProperties {color_space, default_size}
    b.PrependInt8Slot(0, colour_space, 0)
    image = b.EndObject()
    b.StartObject(3)  # Content {content_properties_type, content_properties, range}
    b.PrependUint8Slot(0, 2, 0)  # ImageProperties
    b.PrependUOffsetTRelativeSlot(1, image, 0)
    content = b.EndObject()
    units, in_name = vector([unit]), b.CreateString("image")
    b.StartObject(7)  # TensorMetadata
    b.PrependUOffsetTRelativeSlot(0, in_name, 0)
    b.PrependUOffsetTRelativeSlot(3, content, 0)
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    tensor_in = b.EndObject()
    files = []
    for name, kind in (("readme.txt", 1), (labels_file, 2)):  # DESCRIPTIONS, TENSOR_AXIS_LABELS
        if name:
            text = b.CreateString(name)
            b.StartObject(4)  # AssociatedFile {name, description, type, locale}
            b.PrependUOffsetTRelativeSlot(0, text, 0)
            b.PrependInt8Slot(2, kind, 0)
            files.append(b.EndObject())
    files_v, out_name = vector(files), b.CreateString("segmentation_masks")
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(0, out_name, 0)
    b.PrependUOffsetTRelativeSlot(6, files_v, 0)
    tensor_out = b.EndObject()
    inputs, outputs = vector([tensor_in]), vector([tensor_out])
    b.StartObject(10)  # SubGraphMetadata
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs, 0)
    subgraph = b.EndObject()
    subgraphs, model_name = vector([subgraph]), b.CreateString("tiny segmenter")
    b.StartObject(8)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(0, model_name, 0)
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def tflite_with_support(path: Path, meta: bytes, files: dict[str, str], k: int = 3) -> Path:
    """The tiny TFLite model with ``meta`` as its TFLITE_METADATA buffer, ``files`` zipped on."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes(k=k)), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(meta, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    path.write_bytes(bytes(convert_object_to_bytearray(model)) + archive.getvalue())
    return path


def test_tflite_support_metadata_gives_normalisation_bands_and_labels(tmp_path):
    path = tflite_with_support(tmp_path / "m.tflite", support_metadata(MEAN, STD),
                               {"readme.txt": "a model", "labels.txt": LABELS})
    found = read_tflite_support(path)
    assert found.source == "TFLite Support metadata" and found.bands == "RGB"
    assert found.classes == ["background", "cat", "dog"]
    assert np.allclose(found.mean, MEAN) and np.allclose(found.std, STD)
    seg = Segmenter(path)  # the model loads with the metadata buffer and the zip on it
    assert seg.meta.classes == ["background", "cat", "dog"]
    assert np.allclose(seg.meta.mean, MEAN) and np.allclose(seg.meta.std, STD)
    # softmax or logits: nothing says; nor whether other sizes are tiled or resized
    assert [a.what for a in seg.assumed] == ["output", "resize"]
    image = smooth_image(64, 64)  # the normalisation read is the one applied
    same = Segmenter(path, options=SegmenterOptions(mean=MEAN, std=STD)).predict(image)
    default = Segmenter(path, options=SegmenterOptions(mean=[127.5], std=[127.5])).predict(image)
    assert np.array_equal(seg.predict(image).probabilities, same.probabilities)
    assert not np.allclose(seg.predict(image).probabilities, default.probabilities, atol=1e-3)
    # flags win over the publisher's metadata
    flagged = Segmenter(path, options=SegmenterOptions(mean=[0.0], std=[255.0], classes=["a", "b", "c"],
                                                        output="logits", resize="stretch"))
    assert flagged.meta.mean == [0.0] and flagged.meta.std == [255.0]
    assert flagged.meta.classes == ["a", "b", "c"] and flagged.assumed == []


def test_tflite_support_metadata_without_its_labels_file(tmp_path):
    path = tflite_with_support(tmp_path / "m.tflite", support_metadata([0.0], [255.0], colour_space=0),
                               {"other.txt": "x"})
    found = read_tflite_support(path)
    assert found.classes is None and found.bands is None and found.mean == [0.0]
    seg = Segmenter(path)
    assert sorted(a.what for a in seg.assumed) == ["bands", "classes", "output", "resize"]
    assert seg.meta.classes == ["class_0", "class_1", "class_2"]
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(tflite_bytes(k=3))
    assert read_tflite_support(plain) is None and read_publisher_metadata(plain) is None


def test_labels_that_do_not_fit_the_output_name_their_source(tmp_path):
    path = tflite_with_support(tmp_path / "m.tflite", support_metadata(MEAN, STD),
                               {"labels.txt": "a\nb\n"})
    with pytest.raises(EdgesegError, match="the class names of its TFLite Support metadata"):
        Segmenter(path)
    assert Segmenter(path, options=SegmenterOptions(classes=["a", "b", "c"])).meta.classes == [
        "a", "b", "c"]


def test_edgeseg_metadata_wins_over_the_publishers(tmp_path):
    """An edgeseg export of a model that also carries TFLite Support metadata: edgeseg's counts."""
    from firmware_bridge.runtime.metadata import tflite_with_metadata

    inner = tflite_with_support(tmp_path / "inner.tflite", support_metadata(MEAN, STD),
                                {"labels.txt": "x\ny\nz\n"}).read_bytes()
    path = tmp_path / "both.tflite"
    ours = metadata(classes=3, layout="NHWC")
    path.write_bytes(tflite_with_metadata(inner, ours))
    seg = Segmenter(path)
    assert seg.meta.classes == ours.classes and seg.meta.mean == ours.mean
    assert seg.assumed == []


# ---------------------------------------------------------------- ONNX metadata_props


def onnx_with_props(path: Path, props: dict[str, str], **kw) -> Path:
    onnx = pytest.importorskip("onnx")
    model = _onnx_model(weights(), **kw)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_onnx_metadata_props_read_without_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    props = {"names": "{0: 'sky', 1: 'road', 2: 'car', 3: 'tree'}", "stride": "32",
             "mean": json.dumps(MEAN), "std": ",".join(map(str, STD))}
    path = onnx_with_props(tmp_path / "m.onnx", props)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert onnxfile.metadata_props(path) == session.get_modelmeta().custom_metadata_map
    found = read_onnx_props(path)
    assert found.classes == ["sky", "road", "car", "tree"] and found.bands is None
    assert found.mean == MEAN and found.std == STD
    seg = Segmenter(path)
    assert seg.meta.classes == ["sky", "road", "car", "tree"] and seg.meta.mean == MEAN
    assert sorted(a.what for a in seg.assumed) == ["bands", "output"]
    other = onnx_with_props(tmp_path / "labels.onnx", {"labels": '["a","b","c","d"]',
                                                        "mean_values": "0", "scale_values": "255"})
    assert (read_onnx_props(other).classes, read_onnx_props(other).std) == (["a", "b", "c", "d"],
                                                                            [255.0])
    bad = onnx_with_props(tmp_path / "bad.onnx", {"std": "0", "classes": ""})
    assert read_onnx_props(bad) is None  # a std of 0 and no names are no metadata
    assert read_onnx_props(onnx_with_props(tmp_path / "none.onnx", {})) is None


def test_onnx_edge_quantisation_read_from_the_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    for quant, expected in (("uint8", ((1 / 127.5, 128), (1 / 256, 0))),
                            ("int8", ((1 / 127.5, 0), (1 / 256, -128)))):
        path = tmp_path / f"{quant}.onnx"
        onnx.save(_onnx_model(weights(), quant=quant), str(path))
        (s_in, z_in), (s_out, z_out) = onnxfile.edge_quantization(path)
        assert (z_in, z_out) == (expected[0][1], expected[1][1])
        assert np.isclose(s_in, expected[0][0]) and np.isclose(s_out, expected[1][0])
    path = tmp_path / "float.onnx"
    onnx.save(_onnx_model(weights()), str(path))
    assert onnxfile.edge_quantization(path) == ((0.0, 0), (0.0, 0))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[:100])
    assert onnxfile.edge_quantization(broken) == ((0.0, 0), (0.0, 0))
    with pytest.raises(EdgesegError, match="not a readable ONNX file"):
        onnxfile.metadata_props(broken)


def test_loading_an_onnx_model_does_not_import_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    quantised = tmp_path / "q.onnx"
    onnx.save(_onnx_model(weights(), quant="uint8", meta_json=metadata().to_json()), str(quantised))
    foreign = onnx_with_props(tmp_path / "f.onnx", {"labels": "a,b,c,d"})
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from firmware_bridge.runtime.segmenter import Segmenter\n"
        f"q = Segmenter({str(quantised)!r})\n"
        "assert q.backend.input.zero_point == 128, q.backend.input\n"
        f"f = Segmenter({str(foreign)!r})\n"
        "assert f.meta.classes == ['a', 'b', 'c', 'd'], f.meta.classes\n"
        "f.predict_tiled(np.zeros((40, 40, 3), np.uint8))\n"
        "print(sorted(m for m in sys.modules if m == 'onnx' or m.startswith('onnx.')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- OpenVINO model_info


def test_openvino_model_info_as_the_model_api_writes_it(tmp_path):
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    src = tmp_path / "m.onnx"
    onnx.save(_onnx_model(weights()), str(src))
    model = ov.convert_model(str(src))
    model.set_rt_info("sky road car tree", ["model_info", "labels"])
    model.set_rt_info("123.675 116.28 103.53", ["model_info", "mean_values"])
    model.set_rt_info("58.395 57.12 57.375", ["model_info", "scale_values"])
    model.set_rt_info("True", ["model_info", "reverse_input_channels"])
    xml = tmp_path / "m.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    found = read_openvino_model_info(xml)
    assert found.classes == ["sky", "road", "car", "tree"] and found.bands == "RGB"
    assert found.mean == MEAN and found.std == STD
    seg = Segmenter(xml)
    assert seg.meta.classes == ["sky", "road", "car", "tree"]
    assert [a.what for a in seg.assumed] == ["output"]
    model.set_rt_info("True", ["model_info", "embedded_processing"])
    ov.save_model(model, str(tmp_path / "e.xml"), compress_to_fp16=False)
    embedded = read_openvino_model_info(tmp_path / "e.xml")
    assert (embedded.mean, embedded.std, embedded.bands) == ([0.0], [1.0], None)


# ---------------------------------------------------------------- the line of assumed values


def test_predict_says_once_what_it_assumed(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = tmp_path / "foreign.onnx"
    onnx.save(_onnx_model(weights()), str(model))
    Image.fromarray(smooth_image(70, 90)).save(tmp_path / "a.png")
    run = ["predict", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(run) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "assumed" in line]
    assert len(lines) == 1, lines
    for text in ("foreign.onnx", "mean 127.5 std 127.5 (--mean/--std/--scale)",
                 "bands RGB as stored (--bands)", "output softmax (--output-kind)",
                 "classes class_0,class_1,class_2,class_3 (--classes)"):
        assert text in lines[0]
    assert "layout" not in lines[0]  # the input shape tells it
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["sky", "road", "car", "tree"]) + "\n")
    given = ["--mean", "127.5", "--std", "127.5", "--output-kind", "softmax", "--classes",
             str(labels), "--bands", "1,2,3"]
    assert main(run + given) == 0
    assert "assumed" not in capsys.readouterr().err
    assert main(run + given[:-2]) == 0  # without --bands: only the band order is assumed
    err = capsys.readouterr().err
    assert err.count("assumed") == 1 and "assumed: bands RGB as stored (--bands)\n" in err


def test_mediapipe_selfie_models_carry_no_metadata(shared_dir):
    folder = shared_dir / "models" / "mediapipe_selfie_segmentation"
    if not folder.is_dir():
        pytest.skip(f"no MediaPipe models at {folder}")
    for path in sorted(folder.glob("*.tflite")):
        assert read_publisher_metadata(path) is None, path  # as shipped: no TFLITE_METADATA
        seg = Segmenter(path)
        assert sorted(a.what for a in seg.assumed) == ["bands", "classes", "normalisation",
                                                       "output", "resize"]
        given = Segmenter(path, options=SegmenterOptions(scale=1 / 255, classes=["person"],
                                                         output="sigmoid"))
        assert [a.what for a in given.assumed] == ["bands", "resize"]
