"""The Python side of the accelerator check: GPUs, runtime facts, test models, mask comparison.

Usage (``scripts/check_accelerators.sh`` runs these):
    python scripts/check_accelerators.py gpus
    python scripts/check_accelerators.py facts [KEY]
    python scripts/check_accelerators.py models OUT
    python scripts/check_accelerators.py compare CPU_MASKS MASKS --max-diff PCT --name NAME
    python scripts/check_accelerators.py summary RESULTS_TSV

``gpus`` prints one line per GPU found (``nvidia NAME`` from ``nvidia-smi -L``, ``intel PCI_ID``
from ``/sys/class/drm``) and nothing when there is none; it needs the standard library only.
``facts`` prints what the installed runtimes bring (one ``key: value`` per line, or the value
of one key): the onnxruntime package and the CUDA major version it is built for, its execution
providers, the TensorRT library major version its TensorRT provider links, the CUDA version
the NVIDIA driver supports, and LiteRT delegate libraries shipped in the ai-edge-litert
wheel. ``models`` writes the test models (the network of ``tests/tiny_models.py`` as ONNX,
float and with int8 input and output, and as a float TFLite) and generated images.
``compare`` prints how many mask pixels of a run differ from the CPU's run and exits 1 above
the tolerance. ``summary`` prints the table of all runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DELEGATE_SYMBOL = b"tflite_plugin_create_delegate"
"""What every LiteRT external delegate library exports (its dynamic symbol table names it)."""


def nvidia_gpus(nvidia_smi: str = "nvidia-smi") -> list[str]:
    """The NVIDIA GPUs ``nvidia-smi -L`` lists (``GPU 0: NVIDIA H100 ...``); none without it."""
    if not shutil.which(nvidia_smi):
        return []
    try:
        out = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]


def intel_gpus(drm: Path = Path("/sys/class/drm")) -> list[str]:
    """Intel GPUs: DRM cards whose PCI vendor is 0x8086, as ``vendor:device`` ids."""
    found = []
    for card in sorted(drm.glob("card[0-9]*")):
        vendor = card / "device" / "vendor"
        if "-" in card.name or not vendor.is_file():  # card0-DP-1: a connector, not a card
            continue
        if vendor.read_text().strip().lower() == "0x8086":
            device = card / "device" / "device"
            found.append(f"8086:{device.read_text().strip()[2:] if device.is_file() else '?'}")
    return found


def driver_cuda_version(nvidia_smi: str = "nvidia-smi") -> str | None:
    """The newest CUDA version the NVIDIA driver supports (``nvidia-smi``'s banner), or ``None``."""
    if not shutil.which(nvidia_smi):
        return None
    try:
        out = subprocess.run([nvidia_smi], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"CUDA Version:\s*([0-9.]+)", out)
    return match.group(1) if match else None


def linked_majors(library: Path, stem: str) -> list[str]:
    """Major versions of ``<stem>.so.N`` that a shared library names (e.g. ``libnvinfer``)."""
    data = library.read_bytes()
    found = re.findall(rb"\b" + re.escape(stem.encode()) + rb"\.so\.(\d+)\b", data)
    return sorted({m.decode() for m in found})


def litert_delegates(package: Path) -> list[Path]:
    """Libraries in the ai-edge-litert package that are TFLite external delegates.

    ``--delegate`` (``load_delegate``) takes a library that exports
    ``tflite_plugin_create_delegate``; LiteRT's accelerator libraries for its newer
    CompiledModel API (``libLiteRtWebGpuAccelerator.so``, ``LiteRtAcceleratorImpl``) are not.
    """
    return [so for so in sorted(package.rglob("*.so*")) if DELEGATE_SYMBOL in so.read_bytes()]


def facts(nvidia_smi: str = "nvidia-smi") -> dict[str, str]:
    """What the installed runtimes bring (values are strings; ``""`` where absent)."""
    out = {"onnxruntime": "", "onnxruntime_cuda": "", "providers": "", "tensorrt_major": "",
           "driver_cuda": driver_cuda_version(nvidia_smi) or "", "openvino_devices": "",
           "litert": "", "litert_delegates": ""}
    try:
        import onnxruntime as ort
    except ImportError:
        pass
    else:
        from onnxruntime.capi import build_and_package_info as info

        out["onnxruntime"] = f"{getattr(info, 'package_name', 'onnxruntime')} {ort.__version__}"
        out["onnxruntime_cuda"] = getattr(info, "cuda_version", "") or ""
        out["providers"] = ",".join(ort.get_available_providers())
        trt = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
        if trt.is_file():
            out["tensorrt_major"] = ",".join(linked_majors(trt, "libnvinfer"))
    try:
        import openvino as ov
    except ImportError:
        pass
    else:
        out["openvino_devices"] = ",".join(ov.Core().available_devices)
    try:
        import ai_edge_litert
    except ImportError:
        pass
    else:
        from importlib.metadata import version

        package = Path(ai_edge_litert.__file__).parent
        out["litert"] = f"ai-edge-litert {version('ai-edge-litert')}"
        out["litert_delegates"] = ",".join(str(p) for p in litert_delegates(package))
    return out


def write_models(out: Path) -> list[Path]:
    """Write the test models and two generated images into ``out``; returns the models.

    ``tiny_fp32.onnx`` and ``tiny_int8io.onnx``: the network of ``tests/tiny_models.py``
    (float NCHW, and the same with int8 input and output through Q/DQ nodes), dynamic batch
    and size, with edgeseg metadata; ``tiny_fp32.tflite``: a one-layer float TFLite (64 x 64 input);
    ``images/``: two generated aerial-looking scenes of several tiles each.
    """
    sys.path.insert(0, str(REPO / "tests"))
    import onnx
    from PIL import Image
    from tiny_models import _onnx_model, metadata, smooth_image, tflite_bytes, weights

    from firmware_bridge.runtime.metadata import tflite_with_metadata

    out.mkdir(parents=True, exist_ok=True)
    models = {"tiny_fp32.onnx": _onnx_model(weights(), meta_json=metadata().to_json()),
              "tiny_int8io.onnx": _onnx_model(weights(), quant="int8", meta_json=metadata().to_json())}
    paths = []
    for name, model in models.items():
        onnx.save(model, str(out / name))
        paths.append(out / name)
    (out / "tiny_fp32.tflite").write_bytes(tflite_with_metadata(tflite_bytes(),
                                                                metadata(layout="NHWC")))
    paths.append(out / "tiny_fp32.tflite")
    images = out / "images"
    images.mkdir(exist_ok=True)
    for i, (h, w) in enumerate([(1024, 1280), (700, 900)]):
        Image.fromarray(smooth_image(h, w, seed=30 + i)).save(images / f"scene_{i}.png")
    return paths


def compare(cpu: Path, other: Path, max_diff: float, name: str) -> int:
    """Print the share of mask pixels that differ from the CPU's; 1 above ``max_diff`` per cent."""
    sys.path.insert(0, str(Path(__file__).parent))
    from raw_outputs import compare_masks

    images, pixels, agree = compare_masks(cpu, other)
    share = 100.0 * (pixels - agree) / pixels
    verdict = "within" if share <= max_diff else "MISMATCH: above"
    print(f"{name}: {images} masks, {pixels} pixels, {pixels - agree} differ from the CPU's "
          f"({share:.4f} %; {verdict} the tolerance of {max_diff:g} %)")
    return 0 if share <= max_diff else 1


def summary(results: Path) -> int:
    """Print the table of the runs in ``results`` (TSV: config, model, status, diff, bench JSON)."""
    print("| configuration | model | masks against the CPU | per tile p50 ms | runtime alone "
          "p50 ms | streamed MPix/s |")
    print("|---|---|---|---|---|---|")
    for line in results.read_text().splitlines():
        config, model, status, diff, bench = (line.split("\t") + [""] * 5)[:5]
        tile = runtime = rate = "-"
        if bench and Path(bench).is_file():
            r = json.loads(Path(bench).read_text())
            tile, runtime = r["tile_latency_ms"]["p50"], r["runtime_latency_ms"]["p50"]
            rate = f"{r['raster']['mpix_per_s']} ({r['raster']['mode']})"
        print(f"| {config} | {model} | {status}{f' ({diff})' if diff else ''} | {tile} | "
              f"{runtime} | {rate} |")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gpus", help="the GPUs of this machine, one a line")
    f = sub.add_parser("facts", help="what the installed runtimes bring")
    f.add_argument("key", nargs="?", help="print this value alone")
    m = sub.add_parser("models", help="write the test models and images")
    m.add_argument("out", type=Path)
    c = sub.add_parser("compare", help="mask pixels that differ from the CPU's")
    c.add_argument("cpu", type=Path)
    c.add_argument("other", type=Path)
    c.add_argument("--max-diff", type=float, required=True, help="tolerance, per cent of pixels")
    c.add_argument("--name", required=True)
    s = sub.add_parser("summary", help="the table of all runs")
    s.add_argument("results", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; its exit status."""
    args = parse_args(argv)
    nvidia_smi = os.environ.get("NVIDIA_SMI", "nvidia-smi")
    if args.command == "gpus":
        drm = Path(os.environ.get("EDGESEG_ACCEL_DRM", "/sys/class/drm"))
        for gpu in nvidia_gpus(nvidia_smi):
            print(f"nvidia {gpu}")
        for gpu in intel_gpus(drm):
            print(f"intel {gpu}")
        return 0
    if args.command == "facts":
        values = facts(nvidia_smi)
        if args.key:
            print(values[args.key])
        else:
            print("\n".join(f"{k}: {v or '-'}" for k, v in values.items()))
        return 0
    if args.command == "models":
        for path in write_models(args.out):
            print(path)
        return 0
    if args.command == "compare":
        return compare(args.cpu, args.other, args.max_diff, args.name)
    return summary(args.results)


if __name__ == "__main__":
    sys.exit(main())
