"""QAT and export: every format once, metadata without TensorFlow, parity, int8 op lists, atomicity.

One tiny run (MobileUNet-0.35 with transposed-conv upsampling, 64x64, generated scenes) goes
through the command line once per module: ``edgeseg train`` -> ``edgeseg qat`` ->
``edgeseg export --formats <every format>``; the tests read what that wrote.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.cli import main
from edgeseg.data import synthetic
from export import FORMATS, ExportContext, export_formats, parse_formats
from export.tflite_ops import flatbuffer_size, float_compute_ops, op_counts, op_list
from export.to_carray import read_c_array
from firmware_bridge.errors import EdgesegError, MissingDependencyError

pytestmark = pytest.mark.slow
ALL = ",".join(FORMATS)
FLOAT_FORMATS = [n for n, f in FORMATS.items() if not f.quantized]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = synthetic.write_dataset(root / "data", 4, (96, 128), seed=0, prefix="train")
    synthetic.write_dataset(data, 2, (80, 100), seed=10, prefix="val")
    run, out = root / "run", root / "out"
    common = ["--data", str(data), "--classes", str(data / "classes.csv")]
    assert main(["train", *common, "--out", str(run), "--crop", "64", "--val-tile", "64",
                 "--batch", "8", "--stage1-epochs", "1", "--stage2-epochs", "2",
                 "--steps-per-epoch", "10", "--lr", "3e-3", "--upsampling", "transpose",
                 "--val-pattern", "val_*", "--val-images", "1", "--quiet"]) == 0
    assert main(["qat", str(run), *common, "--epochs", "1", "--steps-per-epoch", "6",
                 "--max-drop", "5", "--quiet"]) == 0
    code = main(["export", str(run), *common, "--formats", ALL, "--out", str(out),
                 "--calibration", "16", "--max-miou-drop", "5"])
    return {"run": run, "out": out, "data": data, "code": code,
            "parity": json.loads((out / "parity.json").read_text())}


def test_every_format_written_and_parity_passes(exported):
    out, parity = exported["out"], exported["parity"]
    rows = {a["format"]: a for a in parity["artifacts"]}
    assert set(rows) == set(FORMATS)
    for name, fmt in FORMATS.items():
        assert (out / f"model{fmt.suffix}").is_file(), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left over
    assert parity["images"] == 2 and parity["ok"] is True and exported["code"] == 0
    # The Keras model is not constant (parity would be trivial) and learned something.
    assert parity["keras_miou"] > 0.2
    for name in FLOAT_FORMATS:
        assert rows[name]["agreement"] >= 0.995, rows[name]
    for name in ("tflite-int8", "tflite-qat-int8", "onnx-qat-int8", "openvino-int8",
                 "openvino-qat-int8", "c-array"):
        assert rows[name]["miou_drop"] <= 5.0, rows[name]
        assert rows[name]["agreement"] >= 0.9, rows[name]  # the default quantized floor
    # The C array is the same int8 model as the QAT TFLite file: same masks.
    assert rows["c-array"]["miou"] == pytest.approx(rows["tflite-qat-int8"]["miou"], abs=1e-9)


def test_metadata_read_back_without_tensorflow(exported):
    out = exported["out"]
    files = [str(out / f"model{f.suffix}") for n, f in FORMATS.items() if n != "c-array"]
    code = (
        "import json, sys\n"
        "from firmware_bridge.runtime.metadata import read_metadata\n"
        "metas = {p: json.loads(read_metadata(p).to_json()) for p in sys.argv[1:]}\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "print(json.dumps(metas))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    metas = json.loads(res.stdout)
    precisions = {Path(p).name: m["precision"] for p, m in metas.items()}
    assert precisions == {"model_fp32.tflite": "fp32", "model_fp16.tflite": "fp16",
                          "model_dynamic.tflite": "int8-dynamic", "model_int8.tflite": "int8",
                          "model_qat_int8.tflite": "int8-qat", "model.onnx": "fp32",
                          "model_fp32.xml": "fp32", "model_fp16.xml": "fp16",
                          "model_int8.xml": "int8", "model_qat_int8.onnx": "int8-qat",
                          "model_qat_int8.xml": "int8-qat"}
    for m in metas.values():
        assert m["classes"] == synthetic.CLASSES
        assert m["colours"][0] == "#3C1098"
        assert m["mean"] == [127.5] and m["std"] == [127.5]
        assert m["input_size"] == [64, 64] and m["layout"] == "NHWC" and m["output"] == "softmax"
        assert m["tile_size"] == 64 and m["tile_overlap"] == 32
        assert m["arch"] == "mobileunet" and m["backbone"] == "mobilenetv2_035"
        assert 0.2 < m["scores"]["miou"] <= 1.0 and m["version"]


@pytest.mark.parametrize("name", ["model_int8.tflite", "model_qat_int8.tflite"])
def test_int8_tflite_is_fully_integer(exported, name):
    model = (exported["out"] / name).read_bytes()
    assert float_compute_ops(model) == []
    ops = op_counts(model)
    assert "QUANTIZE" not in ops or all(
        op.inputs[0] != "FLOAT32" for op in op_list(model)
        if op.name == "QUANTIZE")  # int8 I/O: no float input edge
    assert "DEQUANTIZE" not in ops
    assert ops["TRANSPOSE_CONV"] == 5 and ops["CONCATENATION"] == 4 and ops["SOFTMAX"] == 1


def cpu_has_vnni() -> bool:
    """True on an x86 CPU with VNNI (or AMX): its 8-bit dot products do not saturate."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def test_qat_onnx_and_openvino_agree_with_the_qat_tflite(exported):
    """Same QAT int8 model on three runtimes: the masks of the validation images agree."""
    from edgeseg.data import load_split
    from firmware_bridge.evaluate import score
    from firmware_bridge.io.classes import ClassTable
    from firmware_bridge.runtime.segmenter import Segmenter

    out, data = exported["out"], exported["data"]
    rows = {a["format"]: a for a in exported["parity"]["artifacts"]}
    _, val = load_split(str(data), ClassTable.load(data / "classes.csv"), "val_*", need_train=False)
    pairs = [(s.image, s.mask) for s in val]
    reference = score(Segmenter(out / "model_qat_int8.tflite"), pairs, keep_masks=True).masks
    agreement = {}
    for name in ("model_qat_int8.onnx", "model_qat_int8.xml"):
        seg = Segmenter(out / name)
        assert seg.backend.input.dtype == np.float32  # float edges, quantized inside
        agreement[name] = score(seg, pairs, reference=reference).agreement
    print(f"agreement with model_qat_int8.tflite: {agreement}; parity: "
          f"{ {n: (rows[n]['agreement'], rows[n]['miou_drop']) for n in rows if 'qat' in n} }")
    assert agreement["model_qat_int8.onnx"] >= 0.99
    # OpenVINO's int8 convolutions saturate on x86 CPUs without VNNI (16-bit pair sums, as
    # OpenVINO documents): 96 % there; the parity rules still hold.
    assert agreement["model_qat_int8.xml"] >= (0.99 if cpu_has_vnni() else 0.9)
    for name in ("onnx-qat-int8", "openvino-qat-int8"):
        assert rows[name]["passed"] and rows[name]["precision"] == "int8-qat", rows[name]


def test_qat_onnx_carries_the_scales_of_the_qat_tflite(exported):
    """Every activation scale and zero point of the Q/DQ graph is one of the TFLite file's."""
    import onnx
    from ai_edge_litert import schema_py_generated as schema

    from export.qdq_onnx import activation_quantization

    out = exported["out"]
    data = (out / "model_qat_int8.tflite").read_bytes()
    graph = schema.Model.GetRootAsModel(data[: flatbuffer_size(data)], 0).Subgraphs(0)
    tflite = set()
    for i in range(graph.TensorsLength()):
        q = graph.Tensors(i).Quantization()
        if q is not None and q.ScaleLength() == 1:
            tflite.add((float(np.float32(q.Scale(0))), int(q.ZeroPoint(0))))
    first = graph.Tensors(graph.Inputs(0)).Quantization()
    model = onnx.load(str(out / "model_qat_int8.onnx"))
    found = activation_quantization(model)
    assert len(found) >= 10 and set(found) <= tflite
    assert found[0] == (float(np.float32(first.Scale(0))), int(first.ZeroPoint(0)))  # the input
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 64, 64, 3]


def test_qat_onnx_and_openvino_run_integer_convolutions(exported):
    from export.int8_ops import check_integer_convolutions, openvino_conv_kernels, ort_conv_kernels

    out = exported["out"]
    ort_kernels = ort_conv_kernels(out / "model_qat_int8.onnx")
    ov_kernels = openvino_conv_kernels(out / "model_qat_int8.xml")
    print(ort_kernels.summary())
    print(ov_kernels.summary())
    # 62 convolutions and 5 transposed ones (the decoder's upsampling).
    assert ort_kernels.integer == {"QLinearConv": 62} and ort_kernels.in_float == {}
    assert ort_kernels.transposed_in_float == {"ConvTranspose": 5}  # no integer kernel in ORT's CPU provider
    # OpenVINO: the first convolution (it reads the image) in float, on purpose; the rest int8.
    assert ov_kernels.integer["Convolution/u8"] == 61 and ov_kernels.in_float == {"Convolution/f32": 1}
    assert ov_kernels.total == 67 and ov_kernels.integer.get("Deconvolution/u8", 0) >= 4
    check_integer_convolutions(ort_kernels, "model")
    check_integer_convolutions(ov_kernels, "model", allow_float=1)
    with pytest.raises(EdgesegError, match="runs convolutions in float"):
        check_integer_convolutions(ov_kernels, "model")
    # The checks are not vacuous: the float artifacts are refused.
    float_ort, float_ov = ort_conv_kernels(out / "model.onnx"), openvino_conv_kernels(out / "model_fp32.xml")
    assert float_ort.integer == {} and sum(float_ort.in_float.values()) >= 62
    assert float_ov.integer == {} and float_ov.in_float["Convolution/f32"] >= 62
    for kernels in (float_ort, float_ov):
        with pytest.raises(EdgesegError, match="runs convolutions in float"):
            check_integer_convolutions(kernels, "model")


def test_qdq_rewrite_keeps_every_value(models):
    """uint8 activations and float edges: the same outputs as the int8 graph, bit for bit."""
    import onnx
    import onnxruntime as ort

    from export.qdq_onnx import qdq_model

    original = onnx.load(str(models["int8"]))
    rewritten = qdq_model(original, "uint8")
    assert rewritten.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    q = np.random.default_rng(0).integers(-128, 128, (2, 3, 16, 16)).astype(np.int8)

    def run(model, x):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    want = (run(original, q).astype(np.float32) + 128) / 256  # int8 output, zero point -128
    got = run(rewritten, (q.astype(np.float32) / np.float32(127.5)).astype(np.float32))
    np.testing.assert_array_equal(got, want)


def test_float_tflite_does_compute_in_float(exported):
    """The op check is not vacuous: the float file is flagged."""
    model = (exported["out"] / "model_fp32.tflite").read_bytes()
    assert {op.name for op in float_compute_ops(model)} >= {"CONV_2D", "TRANSPOSE_CONV"}


def test_c_array_round_trips_and_compiles(exported, tmp_path):
    out = exported["out"]
    tflite = (out / "model_qat_int8.tflite").read_bytes()
    flat = tflite[: flatbuffer_size(tflite)]
    assert len(flat) < len(tflite) and flat[4:8] == b"TFL3"
    assert read_c_array(out / "model.cc") == flat
    header = (out / "model.h").read_text()
    assert "#define EDGESEG_NUM_CLASSES 5" in header and "#define EDGESEG_INPUT_HEIGHT 64" in header
    assert f"#define EDGESEG_NUM_OPS {len(op_counts(flat))}" in header
    gxx = __import__("shutil").which("g++")
    if gxx is None:
        pytest.skip("no g++ to compile the generated files")
    main_cc = tmp_path / "main.cc"
    main_cc.write_text(
        '#include "model.h"\n#include <cstdint>\n#include <cstring>\n'
        "int main() { return (reinterpret_cast<std::uintptr_t>(g_edgeseg_model) % 16 != 0) + "
        f"(g_edgeseg_model_len != {len(flat)}u) + "
        "(std::strcmp(g_edgeseg_class_names[4], \"water\") != 0); }\n")
    exe = tmp_path / "a.out"
    subprocess.run([gxx, "-std=c++11", "-O0", "-I", str(out), str(out / "model.cc"), str(main_cc),
                    "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)], check=False).returncode == 0


def test_interrupted_export_leaves_folder_as_it_was(exported, tmp_path, monkeypatch):
    from edgeseg.spec import run_spec
    from edgeseg.training.runs import load_run
    from export import to_tflite

    model, _ = load_run(exported["run"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_fp32.tflite").write_bytes(b"old")
    (out / "notes.txt").write_text("keep")
    real_write = to_tflite._write
    calls = []

    def write_then_die(path, data, ctx, precision):
        calls.append(path.name)
        if len(calls) == 2:  # second format: half a file, then Ctrl-C
            path.write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt
        return real_write(path, data, ctx, precision)

    monkeypatch.setattr(to_tflite, "_write", write_then_die)
    ctx = ExportContext(model, run_spec(exported["run"]), np.zeros((0, 64, 64, 3), np.float32))
    with pytest.raises(KeyboardInterrupt):
        export_formats(ctx, parse_formats("tflite-fp32,tflite-fp16"), out)
    assert calls == ["model_fp32.tflite", "model_fp16.tflite"]
    assert sorted(p.name for p in out.iterdir()) == ["model_fp32.tflite", "notes.txt"]
    assert (out / "model_fp32.tflite").read_bytes() == b"old"


def test_unknown_format_lists_valid_ones():
    with pytest.raises(EdgesegError, match="valid formats: tflite-fp32, tflite-fp16.*c-array"):
        parse_formats("tflite-fp32,tflite-int9")


def test_missing_dependency_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    ctx = ExportContext(None, None, np.zeros((0, 64, 64, 3), np.float32))
    with pytest.raises(MissingDependencyError, match=r"edgeseg\[export\]"):
        export_formats(ctx, parse_formats("openvino-int8"), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is created


def test_parity_failure_exits_nonzero(exported, tmp_path, capsys):
    run, data = exported["run"], exported["data"]
    code = main(["export", str(run), "--formats", "onnx", "--out", str(tmp_path / "o"),
                 "--data", str(data), "--classes", str(data / "classes.csv"),
                 "--min-agreement", "100.5"])  # more than every pixel: cannot pass
    assert code == 1
    err = capsys.readouterr().err
    assert "parity failed: onnx: agreement 100.00 %" in err and "needs agreement >= 100.5 %" in err
    assert json.loads((tmp_path / "o" / "parity.json").read_text())["ok"] is False
    assert "none was written" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["parity.json"]  # no artifact


def test_int8_parity_failure_names_the_layers_that_lose_most(exported, tmp_path, capsys):
    run, data = exported["run"], exported["data"]
    out = tmp_path / "o"
    code = main(["export", str(run), "--formats", "tflite-int8", "--out", str(out),
                 "--data", str(data), "--classes", str(data / "classes.csv"), "--calibration", "8",
                 "--min-quantized-agreement", "100.5"])  # more than every pixel: cannot pass
    assert code == 1
    err = capsys.readouterr().err
    assert "post-training int8: int8 quantization error per layer" in err
    report = json.loads((out / "quant_report.json").read_text())
    assert report["failed"] == ["tflite-int8"]
    layers = report["post-training"]["layers"]
    assert len(layers) > 50 and layers[0]["added_db"] >= layers[-1]["added_db"]
    assert layers[0]["layer"] in err  # the worst one is printed
    assert not (out / "model_int8.tflite").exists()


def test_float_layers_stay_float_in_the_post_training_formats(exported, tmp_path, capsys):
    from firmware_bridge.runtime.metadata import read_metadata

    run, data = exported["run"], exported["data"]
    out = tmp_path / "o"
    common = ["--data", str(data), "--classes", str(data / "classes.csv"), "--calibration", "8",
              "--max-miou-drop", "5"]
    assert main(["export", str(run), "--formats", "tflite-int8,openvino-int8", "--out", str(out),
                 "--float-layers", "block_5_project,dec_s4_dw", *common]) == 0
    model = (out / "model_int8.tflite").read_bytes()
    floats = float_compute_ops(model)
    assert {layer for op in floats for layer in ("block_5_project", "dec_s4_dw") if op.computes(layer)} \
        == {"block_5_project", "dec_s4_dw"}
    assert all(op.computes("block_5_project") or op.computes("dec_s4_dw") for op in floats)
    assert len(op_list(model)) - len(floats) > 50  # the rest is int8
    assert read_metadata(out / "model_int8.tflite").precision == "int8-mixed"
    assert read_metadata(out / "model_int8.xml").precision == "int8-mixed"
    capsys.readouterr()
    assert main(["export", str(run), "--formats", "tflite-int8", "--out", str(tmp_path / "p"),
                 "--float-layers", "block_99_nothing", *common]) == 2
    assert "no operator computes block_99_nothing" in capsys.readouterr().err
    assert main(["export", str(run), "--formats", "tflite-qat-int8", "--out", str(tmp_path / "q"),
                 "--float-layers", "block_5_project", *common]) == 2
    assert "applies to the post-training formats" in capsys.readouterr().err


class AbortingPath(type(Path())):
    """A path that kills the process unpickling it (a runtime crashing in the parity child)."""

    def __reduce__(self):
        import os

        return (os.abort, ())


def test_a_crashing_runtime_fails_only_its_artifact(exported):
    from export.formats import Artifact
    from export.parity import ParityThresholds, check_artifacts_isolated

    model = exported["out"] / "model_fp32.tflite"
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    fine = Artifact("tflite-fp32", [model], 0.0)
    crash = Artifact("tflite-fp32", [AbortingPath(model)], 0.0)
    rows = check_artifacts_isolated([fine, crash, fine], [image], [mask], [mask], 1.0,
                                    ParityThresholds())
    assert [r.error is None for r in rows] == [True, False, True]  # a fresh child went on
    assert not rows[1].passed and "the runtime crashed (signal 6, SIGABRT)" in rows[1].error
    assert rows[0].precision == rows[2].precision == "fp32"  # rows of runs in the children


def test_quantized_parity_needs_agreement_too(exported, tmp_path, capsys):
    """A quantized artifact within the mIoU limit still fails when too few pixels agree."""
    run, data = exported["run"], exported["data"]
    code = main(["export", str(run), "--formats", "tflite-dynamic", "--out", str(tmp_path / "o"),
                 "--data", str(data), "--classes", str(data / "classes.csv"),
                 "--max-miou-drop", "100", "--min-quantized-agreement", "100.5"])
    assert code == 1
    err = capsys.readouterr().err
    assert "parity failed: tflite-dynamic" in err and "needs drop <= 100, agreement >= 100.5 %" in err


def test_deeplab_qat_converts_to_a_fully_integer_graph(tmp_path):
    """ASPP image pooling, atrous taps (rate 6 on an 8x8 map), concatenations, bilinear upsampling."""
    import tensorflow_model_optimization as tfmot

    from edgeseg.models import build_model
    from edgeseg.quantization.annotate import check_input_order
    from edgeseg.quantization.qat import quantize
    from firmware_bridge.runtime.metadata import ModelMetadata
    from firmware_bridge.runtime.segmenter import Segmenter

    model = build_model("deeplabv3plus", "mobilenetv2_035", 3, (128, 128))
    qat = quantize(model)

    def inputs(layer):
        return [n.name.removeprefix("quant_") for n in layer.inbound_nodes[0].inbound_layers]

    # tfmot alone permuted the ASPP concatenation [1x1, r6, r12, r18, pool] to [pool, 1x1, ...]
    # (tensorflow/model-optimization#1179); quantize() keeps the order.
    for name in ("dec_aspp_concat", "dec_concat"):
        assert inputs(qat.get_layer("quant_" + name)) == inputs(model.get_layer(name))
    assert inputs(model.get_layer("dec_aspp_concat"))[-1] == "dec_aspp_pool_up"
    calib = np.random.default_rng(0).uniform(-1, 1, (4, 128, 128, 3)).astype(np.float32)
    ctx = ExportContext(model, ModelMetadata(classes=["a", "b", "c"]), calib, qat)
    (artifact,) = export_formats(ctx, parse_formats("tflite-qat-int8"), tmp_path)
    data = artifact.path.read_bytes()
    assert float_compute_ops(data) == []
    ops = op_counts(data)
    assert ops["AVERAGE_POOL_2D"] == 1 and ops["RESIZE_NEAREST_NEIGHBOR"] == 1  # image pooling
    assert ops["RESIZE_BILINEAR"] == 2 and ops["CONCATENATION"] == 2
    assert "SPACE_TO_BATCH_ND" not in ops and "DEQUANTIZE" not in ops
    image = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    with pytest.raises(EdgesegError, match=r"reordered the inputs of dec_aspp_concat"):
        check_input_order(model, tfmot.quantization.keras.quantize_model(model))  # tfmot 0.8.1
    assert Segmenter(artifact.path).predict(image).mask.shape == (128, 128)  # LiteRT prepares it


def test_qat_summary_compares_with_float_on_every_validation_image(exported):
    # training scored 1 of the 2 validation images; QAT's float reference must score both
    from edgeseg.data import load_split
    from edgeseg.spec import run_spec
    from edgeseg.training.runs import load_run
    from export.keras_backend import keras_segmenter
    from firmware_bridge.evaluate import score
    from firmware_bridge.io.classes import ClassTable

    run, data = exported["run"], exported["data"]
    summary = json.loads((run / "qat" / "qat.json").read_text())
    model, config = load_run(run)
    _, val = load_split(str(data), ClassTable.load(data / "classes.csv"), "val_*")
    assert len(val) == 2
    seg = keras_segmenter(model, run_spec(run))
    assert seg.tile == (config.val_tile,) * 2 and seg.overlap == config.val_overlap
    full = score(seg, [(s.image, s.mask) for s in val]).scores.miou
    assert summary["float_miou"] == pytest.approx(full, abs=1e-6)


def test_tile_auto_measures_the_candidates_and_writes_the_choice(exported, tmp_path):
    from export.tile_choice import TileTrial, choose_tile
    from firmware_bridge.runtime.metadata import read_metadata
    from firmware_bridge.runtime.segmenter import Segmenter

    data, out = exported["data"], tmp_path / "auto"
    assert main(["export", str(exported["run"]), "--data", str(data), "--classes",
                 str(data / "classes.csv"), "--formats", "tflite-fp32", "--tile", "auto",
                 "--out", str(out)]) == 0
    choice = json.loads((out / "tile_choice.json").read_text())
    trials = [TileTrial(**t) for t in choice["trials"]]
    assert [(t.tile, t.overlap) for t in trials] == [(64, 8), (64, 16), (96, 8), (96, 16),
                                                     (128, 8), (128, 16)]
    assert all(0 < t.miou <= 1 and t.mpix_s > 0 for t in trials)
    chosen = choose_tile(trials)
    assert choice["chosen"] == chosen.to_dict()
    meta = read_metadata(str(out / "model_fp32.tflite"))
    assert (meta.tile_size, meta.tile_overlap) == (chosen.tile, chosen.overlap)
    seg = Segmenter(out / "model_fp32.tflite")  # predict's defaults come from the metadata
    assert seg.tile == (chosen.tile, chosen.tile) and seg.overlap == chosen.overlap
    assert main(["export", str(exported["run"]), "--data", str(data), "--classes",
                 str(data / "classes.csv"), "--formats", "tflite-fp32", "--tile", "auto",
                 "--input-size", "96", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
