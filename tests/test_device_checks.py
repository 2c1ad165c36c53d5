"""The helpers of the device checks (scripts/check_tflm.sh, scripts/check_arm64.sh) without a device."""

import importlib.util

import numpy as np
import pytest
from conftest import REPO
from PIL import Image


def _module(path: str):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_")[:-3], REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tflm_check():
    return _module("tools/tflm_host/tflm_check.py")


@pytest.fixture(scope="module")
def raw_outputs():
    return _module("scripts/raw_outputs.py")


@pytest.mark.parametrize(("op", "call"), [
    ("CONV_2D", "resolver.AddConv2D();"),
    ("DEPTHWISE_CONV_2D", "resolver.AddDepthwiseConv2D();"),
    ("AVERAGE_POOL_2D", "resolver.AddAveragePool2D();"),
    ("RESIZE_BILINEAR", "resolver.AddResizeBilinear();"),
    ("SPACE_TO_BATCH_ND", "resolver.AddSpaceToBatchNd();"),
    ("TRANSPOSE_CONV", "resolver.AddTransposeConv();"),
    ("HARD_SWISH", "resolver.AddHardSwish();"),
    ("RELU6", "resolver.AddRelu6();"),
    ("UNIDIRECTIONAL_SEQUENCE_LSTM", "resolver.AddUnidirectionalSequenceLSTM();"),
])
def test_resolver_calls_are_tflm_method_names(tflm_check, op, call):
    assert tflm_check.resolver_call(op) == call


def test_custom_operator_is_refused(tflm_check):
    with pytest.raises(SystemExit, match="custom operator"):
        tflm_check.resolver_call("CUSTOM:Convolution2DTransposeBias")


def test_header_operator_list_and_defines(tflm_check, tmp_path):
    header = tmp_path / "model.h"
    header.write_text("#define EDGESEG_INPUT_HEIGHT 64\n#define EDGESEG_INPUT_ZERO_POINT (-1)\n"
                      "/* Builtin operators of the graph (register exactly these):\n"
                      " *   ADD x10\n *   CONV_2D x41\n *   SOFTMAX x1\n */\n"
                      "#define EDGESEG_NUM_OPS 3\n")
    assert tflm_check.header_ops(header) == ["ADD", "CONV_2D", "SOFTMAX"]
    assert tflm_check.header_int(header, "EDGESEG_INPUT_ZERO_POINT") == -1
    assert tflm_check.header_int(header, "EDGESEG_NUM_OPS") == 3


def test_steps_apart_counts(tflm_check):
    a = np.array([0, 5, -128, 127], np.int8)
    b = np.array([0, 6, 127, 125], np.int8)
    assert tflm_check.steps_apart(a, b) == (1, 1, 2, 255)


def test_mask_agreement_counts_pixels(raw_outputs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    mask = np.zeros((4, 5), np.uint8)
    Image.fromarray(mask).save(a / "x_mask.png")
    mask[1, 2] = 3
    Image.fromarray(mask).save(b / "x_mask.png")
    assert raw_outputs.compare_masks(a, b) == (1, 20, 19)
    np.savez(tmp_path / "ra.npz", x=np.array([1, 2, 3], np.int8))
    np.savez(tmp_path / "rb.npz", x=np.array([1, 3, 6], np.int8))
    line = raw_outputs.compare_raw(tmp_path / "ra.npz", tmp_path / "rb.npz")
    assert "3 values, 1 equal, 1 one step apart, 1 further (max 3)" in line


def test_tflm_compare_goes_through_the_reference_kernels_option(tflm_check, tmp_path, capsys):
    """``compare`` on host files made with ``--kernels reference``: 0; one score 2 steps off: 1."""
    pytest.importorskip("ai_edge_litert")
    from tiny_models import INT8_SIZE, metadata, smooth_image, tflite_int8_bytes

    from export.to_carray import source_text
    from firmware_bridge.runtime.backends import BackendOptions, open_backend
    from firmware_bridge.runtime.metadata import tflite_with_metadata
    from firmware_bridge.runtime.segmenter import Segmenter

    data, meta = tflite_int8_bytes(), metadata(layout="NHWC")
    (tmp_path / "model.cc").write_text(source_text(data, meta, "model.h"))
    model = tmp_path / "model.tflite"
    model.write_bytes(tflite_with_metadata(data, meta))
    Image.fromarray(smooth_image(INT8_SIZE, INT8_SIZE)).save(tmp_path / "tile.png")
    x = Segmenter(model).preprocess(np.asarray(Image.open(tmp_path / "tile.png"))[None])
    x.tofile(tmp_path / "input.bin")
    scores = open_backend(model, options=BackendOptions(kernels="reference")).run(x)
    scores.tofile(tmp_path / "scores.bin")
    args = [tmp_path / "model.cc", tmp_path / "tile.png", tmp_path / "input.bin",
            tmp_path / "scores.bin"]
    assert tflm_check.compare(*args) == 0
    out = capsys.readouterr().out
    assert f"LiteRT reference kernels: {scores.size} int8 scores, {scores.size} equal" in out
    assert f"LiteRT default kernels: {scores.size} int8 scores, {scores.size} equal" not in out
    scores.flat[5] = scores.flat[5] - 2 if scores.flat[5] > -126 else scores.flat[5] + 2
    scores.tofile(tmp_path / "scores.bin")
    assert tflm_check.compare(*args) == 1
    assert "1 further (max 2)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def accel():
    return _module("scripts/check_accelerators.py")


def test_accelerator_check_without_a_gpu_says_not_run(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "drm").mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "NVIDIA_SMI": str(tmp_path / "no-nvidia-smi"),
           "EDGESEG_ACCEL_DRM": str(tmp_path / "drm"), "EDGESEG_ACCEL_DIR": str(tmp_path / "work")}
    out = subprocess.run(["bash", str(REPO / "scripts" / "check_accelerators.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("accelerator check not run")
    assert "no GPU found" in out.stdout
    assert not (tmp_path / "work").exists()  # nothing installed


def test_accelerator_check_finds_gpus_and_driver(accel, tmp_path):
    drm = tmp_path / "drm"
    for card, vendor in (("card0", "0x8086"), ("card1", "0x10de"), ("card0-DP-1", "0x8086")):
        (drm / card / "device").mkdir(parents=True)
        (drm / card / "device" / "vendor").write_text(vendor + "\n")
        (drm / card / "device" / "device").write_text("0x56a0\n")
    assert accel.intel_gpus(drm) == ["8086:56a0"]
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\nif [ "$1" = -L ]; then echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)";\n'
                   'else echo "| NVIDIA-SMI 580.65.06  Driver Version: 580.65.06  CUDA Version: 13.0 |";'
                   ' fi\n')
    smi.chmod(0o755)
    assert accel.nvidia_gpus(str(smi)) == ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"]
    assert accel.driver_cuda_version(str(smi)) == "13.0"
    assert accel.nvidia_gpus(str(tmp_path / "absent")) == []
    assert accel.driver_cuda_version(str(tmp_path / "absent")) is None


def test_accelerator_check_reads_libraries(accel, tmp_path):
    trt = tmp_path / "libonnxruntime_providers_tensorrt.so"
    trt.write_bytes(b"\x7fELF\0libcudart.so.13\0libnvinfer_plugin.so.11\0libnvinfer.so.10\0")
    assert accel.linked_majors(trt, "libnvinfer") == ["10"]
    assert accel.linked_majors(trt, "libcudart") == ["13"]
    package = tmp_path / "ai_edge_litert"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "libgpu_delegate.so").write_bytes(b"\0tflite_plugin_create_delegate\0")
    (package / "libLiteRtWebGpuAccelerator.so").write_bytes(b"\0LiteRtAcceleratorImpl\0")
    assert accel.litert_delegates(package) == [package / "sub" / "libgpu_delegate.so"]


def test_accelerator_check_compares_masks_with_a_tolerance(accel, tmp_path, capsys):
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    cpu.mkdir()
    gpu.mkdir()
    mask = np.zeros((10, 100), np.uint8)
    Image.fromarray(mask).save(cpu / "a_mask.png")
    mask[0, :3] = 2  # 3 of 1000 pixels: 0.3 %
    Image.fromarray(mask).save(gpu / "a_mask.png")
    assert accel.compare(cpu, gpu, 0.5, "cuda a") == 0
    line = capsys.readouterr().out
    assert "cuda a: 1 masks, 1000 pixels, 3 differ from the CPU's (0.3000 %; within" in line
    assert accel.compare(cpu, gpu, 0.2, "cuda a") == 1
    assert "MISMATCH: above the tolerance of 0.2 %" in capsys.readouterr().out
