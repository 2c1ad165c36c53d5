"""How much arithmetic a model is, and how fast this machine multiplies: the floor of a backend.

:func:`tflite_macs` counts the multiply-accumulates of a TFLite graph from its operators'
tensor shapes (convolutions, depthwise convolutions, transposed convolutions, fully connected
layers: the rest is negligible). :func:`matmul_rate` times a float32 matrix product with
numpy's BLAS on this machine. Their ratio against a backend's measured time says how far from
the hardware the backend runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _shape(details: dict, index: int) -> list[int]:
    return [int(d) for d in details[index]["shape"]]


def tflite_macs(path: str | Path) -> int:
    """Multiply-accumulates of one inference of a TFLite model at its input size.

    Raises:
        EdgesegError: When the file is not a loadable TFLite model.
    """
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.runtime.backend_litert import import_litert

    interpreter_cls, _ = import_litert()
    try:
        it = interpreter_cls(model_path=str(path))
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EdgesegError(f"{path}: not a loadable TFLite model ({exc})") from exc
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    total = 0
    for op in it._get_ops_details():  # noqa: SLF001 - LiteRT's only view of the graph
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        if not outs or min(ins[:2], default=-1) < 0:
            continue
        out = _shape(tensors, outs[0])
        if name == "CONV_2D":  # filter [cout, kh, kw, cin]
            _, kh, kw, cin = _shape(tensors, ins[1])
            total += int(np.prod(out)) * kh * kw * cin
        elif name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, cout]
            _, kh, kw, _ = _shape(tensors, ins[1])
            total += int(np.prod(out)) * kh * kw
        elif name == "TRANSPOSE_CONV":  # inputs: output shape, filter [cout, kh, kw, cin], x
            _, kh, kw, _ = _shape(tensors, ins[1])
            total += int(np.prod(_shape(tensors, ins[2]))) * kh * kw * out[-1]
        elif name == "FULLY_CONNECTED":  # weights [units, in]
            units, depth = _shape(tensors, ins[1])[:2]
            total += int(np.prod(out)) // units * units * depth
    return total


def matmul_rate(size: int = 1024, runs: int = 7) -> float:
    """Multiply-accumulates per second of a ``size``-square float32 matrix product (numpy BLAS).

    The median of ``runs`` timings after one untimed product: a reference that one lucky (or
    one interrupted) run does not move, as the runtime's own latency is a median too.

    Returns:
        The rate of the median timing, in MAC/s.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return size**3 / float(np.median(times))
