"""The Python side of the TFLite Micro check: the resolver calls, the tile, the comparison.

Usage (``scripts/check_tflm.sh`` runs these):
    python tools/tflm_host/tflm_check.py prepare MODEL.h TILE.png OUT_DIR
    python tools/tflm_host/tflm_check.py compare MODEL.cc TILE.png HOST_INPUT HOST_SCORES

``prepare`` writes ``OUT_DIR/ops.inc`` (one ``resolver.AddXxx();`` per operator the generated
header lists, as a firmware registers them) and ``OUT_DIR/tile.rgb`` (the tile's RGB bytes;
the tile must have the model's input size).

``compare`` rebuilds the ``.tflite`` from the C array, runs it on the int8 input tensor the
host program made through the device runtime's LiteRT backend, once with
``--kernels reference`` (LiteRT's reference kernels: the arithmetic TFLM's reference kernels
implement) and once with its default kernels (XNNPACK, what ``edgeseg-run`` uses unless told),
and counts how many int8 scores are equal, one quantisation step apart, or further; also the
argmax masks, and the host's input tensor against ``edgeseg-run``'s quantisation of the same
tile. Exit status 1 when the input tensors differ or a score is more than one step away from
the reference kernels' (the default kernels round each layer's requantisation their own way,
and those differences add up through the layers: they are counted, not failed).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import numpy as np

# Operators whose resolver method is not the operator's name in CamelCase.
RESOLVER_NAMES = {"UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM"}


def resolver_call(op: str) -> str:
    """``DEPTHWISE_CONV_2D`` -> ``resolver.AddDepthwiseConv2D();``."""
    if op.startswith("CUSTOM"):
        raise SystemExit(f"the graph holds a custom operator ({op}): TFLM needs its kernel")
    name = RESOLVER_NAMES.get(op) or "".join(
        part if re.fullmatch(r"\d+D", part) else part.capitalize() for part in op.split("_"))
    return f"resolver.Add{name}();"


def header_ops(header: Path) -> list[str]:
    """The operator names the generated header lists (`` *   CONV_2D x41``)."""
    return re.findall(r"^ \*   ([A-Z0-9_:]+(?:[A-Za-z0-9_]*)) x\d+$", header.read_text(), re.M)


def header_int(header: Path, name: str) -> int:
    """An integer ``#define`` of the generated header."""
    match = re.search(rf"#define {name} \(?(-?\d+)\)?", header.read_text())
    if not match:
        raise SystemExit(f"{header}: no {name}")
    return int(match.group(1))


def prepare(header: Path, tile: Path, out: Path) -> int:
    """Write ``ops.inc`` and ``tile.rgb`` into ``out``."""
    from PIL import Image

    ops = header_ops(header)
    if len(ops) != header_int(header, "EDGESEG_NUM_OPS"):
        raise SystemExit(f"{header}: the operator list and EDGESEG_NUM_OPS disagree")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ops.inc").write_text("".join(f"  {resolver_call(op)}\n" for op in ops))
    rgb = np.asarray(Image.open(tile).convert("RGB"))
    size = (header_int(header, "EDGESEG_INPUT_HEIGHT"), header_int(header, "EDGESEG_INPUT_WIDTH"))
    if rgb.shape[:2] != size:
        raise SystemExit(f"{tile}: {rgb.shape[0]}x{rgb.shape[1]}, the model takes {size[0]}x{size[1]}")
    (out / "tile.rgb").write_bytes(rgb.tobytes())
    print(f"operators: {', '.join(ops)}; tile {size[0]}x{size[1]}")
    return 0


def litert_scores(model: Path, x: np.ndarray, reference: bool) -> np.ndarray:
    """The device runtime's output for the input tensor ``x``.

    Args:
        model: The ``.tflite`` file.
        x: The int8 input tensor.
        reference: ``--kernels reference`` (LiteRT's reference kernels) instead of the default.
    """
    from firmware_bridge.runtime.backends import BackendOptions, open_backend

    kernels = "reference" if reference else "default"
    return open_backend(model, "litert", BackendOptions(kernels=kernels)).run(x)


def steps_apart(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """``(equal, one step apart, further, max)`` of two int8 arrays."""
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return (int(np.count_nonzero(d == 0)), int(np.count_nonzero(d == 1)),
            int(np.count_nonzero(d > 1)), int(d.max()))


def compare(source: Path, tile: Path, host_input: Path, host_scores: Path) -> int:
    """Print the host's output against LiteRT's; 1 when a score is further than one step."""
    from PIL import Image

    from export.to_carray import runnable_tflite
    from firmware_bridge.runtime.segmenter import Segmenter

    with tempfile.TemporaryDirectory() as tmp:
        model = runnable_tflite(source, Path(tmp))
        segmenter = Segmenter(model)
        shape = tuple(segmenter.backend.input.shape)
        rgb = np.asarray(Image.open(tile).convert("RGB"))[None]
        runtime_input = segmenter.preprocess(rgb)
        x = np.fromfile(host_input, np.int8).reshape(shape)
        scores = np.fromfile(host_scores, np.int8)
        diff_in = int(np.count_nonzero(x != runtime_input))
        print(f"input tensor: {x.size} values, {diff_in} differ from edgeseg-run's quantisation")
        failed = diff_in > 0
        for label, reference in (("LiteRT reference kernels", True),
                                 ("LiteRT default kernels", False)):
            ref = litert_scores(model, x, reference)
            scores = scores.reshape(ref.shape)
            equal, one, further, worst = steps_apart(scores, ref)
            masks = np.argmax(scores, -1) == np.argmax(ref, -1)
            print(f"TFLM vs {label}: {scores.size} int8 scores, {equal} equal, {one} one step "
                  f"apart, {further} further (max {worst}); argmax mask "
                  f"{int(masks.sum())}/{masks.size} pixels agree")
            failed |= reference and further > 0
    return 1 if failed else 0


if __name__ == "__main__":
    usage = __doc__.split("Usage")[1].split("\n\n")[0]
    if len(sys.argv) == 5 and sys.argv[1] == "prepare":
        sys.exit(prepare(*map(Path, sys.argv[2:])))
    if len(sys.argv) == 6 and sys.argv[1] == "compare":
        sys.exit(compare(*map(Path, sys.argv[2:])))
    sys.exit("usage" + usage)
