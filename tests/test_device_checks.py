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
