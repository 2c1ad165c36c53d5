"""Backends: selection, tensor specs and quantisation, batching, and clear errors."""

from pathlib import Path

import numpy as np
import pytest
from tiny_models import INT8_SIZE, prob_atol, tflite_int8_bytes

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.backend_openvino import check_device, precision_config
from firmware_bridge.runtime.backend_ort import check_providers, check_started
from firmware_bridge.runtime.backends import BackendOptions, backend_for, guess_layout, open_backend


def test_backend_for_suffix_and_name():
    assert backend_for("m.tflite") == "litert"
    assert backend_for("m.xml") == "openvino"
    assert backend_for("m.onnx") == "onnxruntime"
    assert backend_for("m.onnx", "OpenVINO") == "openvino"
    assert backend_for("m.bin", "ort") == "onnxruntime"
    with pytest.raises(EdgesegError, match="litert, openvino, onnxruntime"):
        backend_for("m.onnx", "tensorrt")
    with pytest.raises(EdgesegError, match=r"\.tflite/\.xml/\.onnx"):
        backend_for("m.pt")


def test_guess_layout():
    assert guess_layout((None, 3, None, None)) == "NCHW"
    assert guess_layout((1, 256, 256, 3)) == "NHWC"
    assert guess_layout((None, None, None, 3)) == "NHWC"
    assert guess_layout((1, 3, 3, 3)) == "NHWC"  # ambiguous: channels-last wins


def test_onnx_specs_and_layout(models):
    b = open_backend(models["nchw"])
    assert b.name == "onnxruntime" and b.layout == "NCHW" and b.dynamic_batch
    assert b.input.shape == (None, 3, None, None) and b.input.dtype == np.float32
    assert not b.input.quantized and b.output.shape == (None, 4, None, None)
    assert open_backend(models["nhwc"]).layout == "NHWC"


@pytest.mark.parametrize("key", ["uint8", "uint8_xml", "int8"])
def test_quantisation_params_are_reported(models, key):
    b = open_backend(models[key])
    zp_in, zp_out = (128, 0) if key.startswith("uint8") else (0, -128)
    assert b.input.dtype == (np.uint8 if key.startswith("uint8") else np.int8)
    assert b.input.quantized and b.output.quantized
    assert b.input.scale == pytest.approx(1 / 127.5, rel=1e-6) and b.input.zero_point == zp_in
    assert b.output.scale == pytest.approx(1 / 256, rel=1e-6) and b.output.zero_point == zp_out
    assert b.describe()["input"]["zero_point"] == zp_in


@pytest.mark.parametrize("key", ["nchw", "nchw_xml"])
def test_batch_equals_single_runs(models, key):
    b = open_backend(models[key], options=BackendOptions(threads=1))
    x = np.random.default_rng(0).normal(0, 1, (3, 3, 40, 56)).astype(np.float32)
    batched = b.run(x)
    single = np.concatenate([b.run(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 4, 40, 56)
    # rounding alone (OpenVINO compiles each batch size on its own and may pick other kernels),
    # ~2.4e-5 (prob_atol); the pooled branch averaged over the batch, not per image, moves 1.4e-3
    np.testing.assert_allclose(batched, single, atol=prob_atol(x))


def test_openvino_compiles_every_input_shape_static(models):
    """A dynamic IR is never compiled dynamic (the AMX int8 crash of dynamic shapes)."""
    b = open_backend(models["nchw_xml"], options=BackendOptions(threads=1))
    assert b.input.shape[0] is None and b.dynamic_batch  # what the file says
    x = np.random.default_rng(5).normal(0, 1, (3, 3, 40, 56)).astype(np.float32)
    batched, first = b.run(x), b.run(x[:1])
    b.run(x[1:2])
    assert sorted(b._requests) == [(1, 3, 40, 56), (3, 3, 40, 56)]  # compiled once per shape
    for request in b._requests.values():
        assert request.get_compiled_model().input(0).get_partial_shape().is_static
    np.testing.assert_allclose(batched[:1], first, atol=prob_atol(x))  # kernels per shape


def test_openvino_reads_onnx_too(models):
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    ov_onnx = open_backend(models["nchw"], "openvino")
    ov_ir = open_backend(models["nchw_xml"])
    assert ov_onnx.name == ov_ir.name == "openvino"
    np.testing.assert_allclose(ov_onnx.run(x), ov_ir.run(x), atol=prob_atol(x))  # two graphs


def test_openvino_asks_the_cpu_for_f32(models):
    """CPUs with AMX or AVX512_BF16 would infer in bf16 by default (probabilities off by ~1e-2):
    the CPU is asked for f32 directly, and through the virtual devices that may pick it."""
    import openvino as ov

    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    assert precision_config("CPU") == precision_config("cpu") == precision_config("BATCH:CPU(4)") == f32
    for device in ("AUTO", "AUTO:GPU,CPU", "MULTI:CPU", "HETERO:GPU,CPU"):
        assert precision_config(device) == {"DEVICE_PROPERTIES": {"CPU": f32}}, device
    assert precision_config("GPU") == precision_config("NPU") == precision_config("BATCH:GPU") == {}
    x = np.random.default_rng(1).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    cpu = open_backend(models["nchw_xml"], options=BackendOptions(threads=1))
    want = cpu.run(x)
    compiled = cpu._requests[x.shape].get_compiled_model()
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    auto = open_backend(models["nchw_xml"], options=BackendOptions(device="AUTO", threads=1))
    np.testing.assert_allclose(auto.run(x), want, atol=prob_atol(x))  # the CPU through AUTO


def test_litert_dynamic_batch_resizes(tflite):
    b = open_backend(tflite, options=BackendOptions(threads=2))
    assert b.name == "litert" and b.layout == "NHWC"
    assert b.input.shape == (None, 64, 64, 3) and b.dynamic_batch
    x = np.random.default_rng(2).normal(0, 1, (3, 64, 64, 3)).astype(np.float32)
    batched = b.run(x)
    single = np.concatenate([b.run(x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(batched, single, atol=prob_atol(x.transpose(0, 3, 1, 2)))
    with pytest.raises(EdgesegError, match="takes input"):
        b.run(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(EdgesegError, match="float32"):
        b.run(np.zeros((1, 64, 64, 3), np.uint8))


def test_litert_fixed_batch_loops(shared_dir):
    path = shared_dir / "models" / "mediapipe_selfie_segmentation" / "selfie_segmentation.tflite"
    b = open_backend(path)
    assert b.input.shape == (1, 256, 256, 3) and not b.dynamic_batch
    x = np.random.default_rng(3).random((2, 256, 256, 3)).astype(np.float32)
    out = b.run(x)
    assert out.shape == (2, 256, 256, 1)
    np.testing.assert_array_equal(out[1:], b.run(x[1:]))


def test_xnnpack_effect_names_a_graph_that_needs_the_delegate(shared_dir):
    from firmware_bridge.runtime.backend_litert import xnnpack_effect

    path = shared_dir / "models" / "mediapipe_selfie_segmentation" / "selfie_segmentation.tflite"
    effect = xnnpack_effect(path, threads=1, runs=1)
    assert effect["with_ms"] > 0 and effect["without_ms"] is None and effect["speedup"] is None
    assert "Convolution2DTransposeBias" in effect["without_error"]


def test_check_device_and_providers_list_what_is_available():
    check_device("AUTO", ["CPU"])
    check_device("GPU", ["CPU", "GPU.0", "GPU.1"])
    check_device("GPU.1", ["CPU", "GPU.0", "GPU.1"])
    with pytest.raises(EdgesegError, match="available here: CPU, AUTO"):
        check_device("NPU", ["CPU"])
    check_providers(["CPUExecutionProvider"], ["CPUExecutionProvider"])
    with pytest.raises(EdgesegError, match="this build has: CPUExecutionProvider"):
        check_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"])


def test_a_provider_that_does_not_start_is_an_error(models):
    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    check_started(Path("m.onnx"), [cuda], [cuda, cpu])  # ONNX Runtime adds the CPU last
    check_started(Path("m.onnx"), [cuda, cpu], [cuda, cpu])
    with pytest.raises(EdgesegError, match=r"m.onnx: ONNX Runtime did not start "
                                           r"TensorrtExecutionProvider .* would run on "
                                           r"CUDAExecutionProvider, CPUExecutionProvider"):
        check_started(Path("m.onnx"), ["TensorrtExecutionProvider", cuda, cpu], [cuda, cpu])
    assert open_backend(models["nchw"]).describe()["providers"] == [cpu]
    assert open_backend(models["nchw_xml"]).describe()["device"] == "CPU"


def litert_direct(data: bytes, x: np.ndarray, resolver: str) -> np.ndarray:
    """LiteRT's interpreter built here with ``OpResolverType.<resolver>``, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_op_resolver_type=getattr(OpResolverType, resolver))
    it.allocate_tensors()
    out = []
    for image in x:
        it.set_tensor(it.get_input_details()[0]["index"], image[None])
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    return np.concatenate(out)


def test_reference_kernels_are_litert_builtin_ref_exactly(tmp_path):
    pytest.importorskip("ai_edge_litert")
    data = tflite_int8_bytes()
    path = tmp_path / "int8.tflite"
    path.write_bytes(data)
    x = np.random.default_rng(1).integers(-128, 128, (3, INT8_SIZE, INT8_SIZE, 3)).astype(np.int8)
    reference = open_backend(path, options=BackendOptions(threads=2, kernels="reference"))
    assert reference.describe()["kernels"] == "reference"
    got, expected = reference.run(x), litert_direct(data, x, "BUILTIN_REF")
    assert got.dtype == np.int8 and got.shape == (3, INT8_SIZE, INT8_SIZE, 4)
    np.testing.assert_array_equal(got, expected)
    # the default kernels round otherwise on this model, so the equality above says something
    default = open_backend(path, options=BackendOptions(kernels="default"))
    assert default.describe()["kernels"] == "default"
    assert np.count_nonzero(default.run(x) != expected) > 100


# LiteRT's Delegate.__del__ trips over its own failed load (AttributeError); harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_reference_kernels_are_refused_where_they_do_not_exist(models, tmp_path):
    from firmware_bridge.runtime.segmenter import SegmenterOptions

    for key in ("nchw", "nchw_xml"):
        with pytest.raises(EdgesegError, match=r"--kernels reference: .*only its default kernels"
                                               r".*LiteRT's"):
            open_backend(models[key], options=BackendOptions(kernels="reference"))
    assert open_backend(models["nchw"], options=BackendOptions(kernels="default")).name == "onnxruntime"
    path = tmp_path / "int8.tflite"
    path.write_bytes(tflite_int8_bytes())
    with pytest.raises(EdgesegError, match="leave --delegate out"):
        open_backend(path, options=BackendOptions(kernels="reference", delegate="libedgetpu.so.1"))
    with pytest.raises(EdgesegError, match="kernels must be one of default, reference"):
        open_backend(path, options=BackendOptions(kernels="fast"))
    with pytest.raises(EdgesegError, match="kernels must be one of default, reference"):
        SegmenterOptions(kernels="fast")


# LiteRT's Delegate.__del__ trips over its own failed load (AttributeError); harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unavailable_device_provider_delegate(models, tmp_path):
    with pytest.raises(EdgesegError, match="available here: .*CPU"):
        open_backend(models["nchw_xml"], options=BackendOptions(device="MADEUP"))
    with pytest.raises(EdgesegError, match="CPUExecutionProvider"):
        open_backend(models["nchw"], options=BackendOptions(providers=("NoSuchExecutionProvider",)))
    with pytest.raises(EdgesegError, match="delegate"):
        open_backend(models["nchw"], options=BackendOptions(delegate="libedgetpu.so.1"))
    fake = tmp_path / "m.tflite"
    fake.write_bytes(b"TFL3" + bytes(200))
    with pytest.raises(EdgesegError, match="cannot load the LiteRT delegate"):
        open_backend(fake, options=BackendOptions(delegate=str(tmp_path / "libnothere.so")))
    with pytest.raises(EdgesegError, match="delegate"):
        open_backend(fake, options=BackendOptions(device="GPU"))


def _truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def test_truncated_and_non_model_files(models, tmp_path):
    with pytest.raises(EdgesegError, match="not a loadable ONNX model"):
        open_backend(_truncate(models["nchw"], tmp_path / "t.onnx"))
    with pytest.raises(EdgesegError, match="not a loadable TFLite model"):
        (tmp_path / "t.tflite").write_text("hello, not a flatbuffer")
        open_backend(tmp_path / "t.tflite")
    xml = _truncate(models["nchw_xml"], tmp_path / "t.xml")
    (tmp_path / "t.bin").write_bytes(models["nchw_xml"].with_suffix(".bin").read_bytes())
    with pytest.raises(EdgesegError, match="not a readable OpenVINO model"):
        open_backend(xml)
    (tmp_path / "lonely.xml").write_bytes(models["nchw_xml"].read_bytes())
    with pytest.raises(EdgesegError, match="lonely.bin"):
        open_backend(tmp_path / "lonely.xml")
    with pytest.raises(EdgesegError, match="no such model file"):
        open_backend(tmp_path / "missing.onnx")


def test_tflite_macs_count_the_convolutions(tflite):
    """conv3x3 3->8, dilated conv3x3 8->8, 1x1 8->8 on the pooled 1x1 map, 1x1 8->4, at 64x64."""
    from firmware_bridge.runtime.compute import matmul_rate, tflite_macs

    pixels = 64 * 64
    assert tflite_macs(tflite) == pixels * 8 * 27 + pixels * 8 * 72 + 8 * 8 + pixels * 4 * 8
    assert matmul_rate(size=128, runs=2) > 1e6
