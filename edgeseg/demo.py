"""The end-to-end demo: train -> QAT -> export -> tiled device inference -> validation.

It runs the same commands a user would (``edgeseg train``, ``edgeseg qat``, ``edgeseg export``,
``edgeseg-run predict``, ``edgeseg-run validate``), printing each before it runs, on a built-in
default that needs no download: scenes from :mod:`edgeseg.data.synthetic`. With ``data`` and
``classes`` it runs on a real dataset instead.

Transfer learning without a download: when no ImageNet weights file is given (``--weights``)
and none is in Keras's cache (``~/.keras/models``), the encoder is first pretrained as a
denoising autoencoder on the training images (``edgeseg pretrain``), and training starts from
that. Nothing else is looked for, so the demo does on every machine what it does on a fresh one.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.pairs import matches

BACKBONE = "mobilenetv2_035"


@dataclass
class DemoOptions:
    """Sizes and budgets of a demo run (the defaults fit ten minutes on two cores).

    Attributes:
        out: Output folder (replaced when it exists).
        data: Dataset folder; ``None`` generates scenes.
        classes: Class table CSV for ``data``.
        val_pattern: Validation stems of ``data`` (``None``: ``edgeseg train``'s default split).
        weights: ImageNet no-top ``.h5``; ``None`` takes Keras's cached ImageNet weights when
            there are some, else pretrains a denoising autoencoder; ``"pretrain"`` always
            pretrains.
        scenes: Generated training scenes (two more are generated for validation).
        scene_size: Edge of each generated scene.
        large_size: Edge of the large generated scene predicted with tiling.
        crop: Training crop and exported model input edge.
        batch: Training batch.
        train_minutes: Training budget (``None``: the epochs below decide).
        stage1_epochs: Epochs with the encoder frozen.
        stage2_epochs: Fine-tuning epochs.
        steps_per_epoch: Training batches per epoch.
        pretrain_minutes: Denoising pretraining budget (only without a weights file).
        qat_epochs: QAT epochs.
        qat_steps: QAT batches per epoch.
        qat_max_drop: mIoU points QAT int8 may lose against float (``edgeseg qat --max-drop``).
        formats: Export formats.
        seed: Seed of data generation and training.
    """

    out: str = "runs/demo"
    data: str | None = None
    classes: str | None = None
    val_pattern: str | None = None
    weights: str | None = None
    scenes: int = 16
    scene_size: int = 512
    large_size: int = 3072
    crop: int = 256
    batch: int = 8
    train_minutes: float | None = 3.5
    stage1_epochs: int = 2
    stage2_epochs: int = 6
    steps_per_epoch: int = 40
    pretrain_minutes: float = 1.0
    qat_epochs: int = 1
    qat_steps: int = 40
    qat_max_drop: float = 1.0
    formats: list[str] = field(default_factory=lambda: ["tflite-qat-int8", "openvino-int8"])
    seed: int = 0


@dataclass
class DemoResult:
    """What the demo measured (also written to ``summary.json``)."""

    float_miou: float | None
    qat_miou: float | None
    parity: list[dict]
    device_miou: float | None
    latency_ms: dict[str, float]
    overlay: str
    seconds: float


def _run(argv: list[str], device: bool = False) -> None:
    """Run one ``edgeseg`` / ``edgeseg-run`` command in-process, printing it first."""
    from edgeseg import cli as train_cli
    from firmware_bridge import cli as run_cli

    prog = "edgeseg-run" if device else "edgeseg"
    print(f"\n$ {prog} {shlex.join(argv)}", flush=True)
    code = (run_cli if device else train_cli).main(argv)
    if code != 0:
        raise EdgesegError(f"'{prog} {argv[0]}' failed with exit status {code} (see above)")


def _find_weights(opts: DemoOptions) -> str | None:
    """The encoder weights: the option's, else Keras's cached ImageNet ones, else ``None``."""
    from edgeseg.models.backbones import keras_cache_file

    if opts.weights == "pretrain":
        return None
    if opts.weights:
        return opts.weights
    return "imagenet" if keras_cache_file(BACKBONE) else None


def _generate(opts: DemoOptions, root: Path) -> tuple[Path, Path, str, Path]:
    """Write the generated dataset, and a large scene in a dataset of its own."""
    from edgeseg.data import synthetic

    data = root / "data"
    size = (opts.scene_size, opts.scene_size)
    synthetic.write_dataset(data, opts.scenes, size, seed=opts.seed, prefix="train")
    synthetic.write_dataset(data, 2, size, seed=opts.seed + 10_000, prefix="val")
    large = root / "large"
    synthetic.write_dataset(large, 1, (opts.large_size, opts.large_size), seed=opts.seed + 20_000,
                            prefix="scene")
    return data, data / "classes.csv", "val_*", large


def _latency(model_paths: dict[str, Path], runs: int = 20) -> dict[str, float]:
    """Median per-tile latency (ms, batch 1, 2 threads) of each artifact on random tiles."""
    from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

    out = {}
    for name, path in model_paths.items():
        seg = Segmenter(path, options=SegmenterOptions(threads=2))
        h, w = seg.tile
        tile = np.random.default_rng(0).integers(0, 256, (1, h, w, seg.channels), dtype=np.uint8)
        seg.scores(tile)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            seg.scores(tile)
            times.append(1000 * (time.perf_counter() - t0))
        out[name] = float(np.median(times))
    return out


def run_demo(opts: DemoOptions) -> DemoResult:
    """Run the whole path and write ``summary.json`` and an overlay PNG into ``opts.out``.

    Raises:
        EdgesegError: When a step fails (its own message is printed above), or for bad options.
    """
    t0 = time.monotonic()
    if (opts.data is None) != (opts.classes is None):
        raise EdgesegError("--data and --classes go together")
    root = Path(opts.out)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if opts.data is None:
        print(f"generating {opts.scenes}+2 scenes of {opts.scene_size} px and one of "
              f"{opts.large_size} px in {root}", flush=True)
        data, classes, val_pattern, large = _generate(opts, root)
    else:
        data, classes, val_pattern, large = Path(opts.data), Path(opts.classes), opts.val_pattern, None
    weights = _find_weights(opts)
    if weights is None:
        print("no ImageNet weights file found: pretraining the encoder as a denoising autoencoder "
              "on the training images", flush=True)
        _run(["pretrain", "--images", str(data / "images"), "--out", str(root / "pretrain"),
              "--crop", str(opts.crop), "--minutes", str(opts.pretrain_minutes), "--seed", str(opts.seed)])
        weights = str(root / "pretrain")
    run = root / "run"
    _run(["train", "--data", str(data), "--classes", str(classes), "--out", str(run),
          "--arch", "mobileunet", "--backbone", BACKBONE, "--encoder-weights", weights,
          *(["--val-pattern", val_pattern] if val_pattern else []),
          "--crop", str(opts.crop), "--batch", str(opts.batch),
          "--steps-per-epoch", str(opts.steps_per_epoch), "--stage1-epochs", str(opts.stage1_epochs),
          "--stage2-epochs", str(opts.stage2_epochs), "--seed", str(opts.seed), "--val-tile", str(opts.crop),
          "--val-images", "0",  # the float mIoU in the final table: every validation image
          *(["--minutes", str(opts.train_minutes)] if opts.train_minutes else [])])
    val_pattern = json.loads((run / "config.json").read_text())["config"]["val_pattern"]
    _run(["qat", str(run), "--data", str(data), "--classes", str(classes),
          "--epochs", str(opts.qat_epochs), "--steps-per-epoch", str(opts.qat_steps),
          "--max-drop", str(opts.qat_max_drop)])
    export_dir = root / "export"
    _run(["export", str(run), "--formats", ",".join(opts.formats), "--out", str(export_dir),
          "--data", str(data), "--classes", str(classes), "--input-size", str(opts.crop)])
    parity = json.loads((export_dir / "parity.json").read_text())
    models = _device_models(export_dir)
    device_model = next(iter(models.values()))
    target = large if large is not None else data
    pattern = "*" if large is not None else val_pattern
    images = sorted(p for p in (target / "images").iterdir() if matches(p.stem, pattern))
    pred_dir = root / "predict"
    _run(["predict", str(device_model), *[str(p) for p in images[:1]], "--out", str(pred_dir),
          "--overlay"], device=True)
    scores_json = root / "validate.json"
    val_root = target if large is not None else _val_subset(data, val_pattern, root / "val_subset")
    _run(["validate", str(device_model), "--data", str(val_root), "--classes", str(classes),
          "--json", str(scores_json)], device=True)
    device_miou = json.loads(scores_json.read_text()).get("miou")
    result = DemoResult(
        float_miou=_read(run / "scores.json", "miou"),
        qat_miou=_read(run / "qat" / "qat.json", "qat_miou"),
        parity=parity["artifacts"],
        device_miou=device_miou,
        latency_ms=_latency(models),
        overlay=str(next(pred_dir.glob("*_overlay.png"), "")),
        seconds=round(time.monotonic() - t0, 1),
    )
    (root / "summary.json").write_text(json.dumps(asdict(result), indent=2))
    print("\n" + summary_table(result, device_model.name, images[0].name))
    return result


def _device_models(export_dir: Path) -> dict[str, Path]:
    found = {}
    for pattern in ("*qat_int8.tflite", "*int8.tflite", "*int8.xml", "*.tflite", "*.xml", "*.onnx"):
        for path in sorted(export_dir.glob(pattern)):
            found.setdefault(path.name, path)
    if not found:
        raise EdgesegError(f"{export_dir}: the export wrote no model file")
    return found


def _val_subset(data: Path, pattern: str, dest: Path) -> Path:
    """A dataset folder holding links to the validation pairs only."""
    for sub in ("images", "masks"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for path in (data / sub).iterdir():
            if matches(path.stem, pattern):
                (dest / sub / path.name).symlink_to(path.resolve())
    return dest


def _read(path: Path, key: str) -> float | None:
    return json.loads(path.read_text()).get(key) if path.is_file() else None


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f} %" if pct else f"{v:.4f}"


def summary_table(result: DemoResult, device_model: str, scene: str) -> str:
    """The demo's closing table (markdown)."""
    lines = ["| what | mIoU | agreement with Keras | latency / tile |", "|---|---|---|---|",
             f"| Keras float (validation) | {_fmt(result.float_miou)} | - | - |",
             f"| Keras QAT (validation) | {_fmt(result.qat_miou)} | - | - |"]
    for row in result.parity:
        ms = result.latency_ms.get(Path(row["file"]).name)
        lat = "-" if ms is None else f"{ms:.1f} ms"
        lines.append(f"| {row['format']} (validation) | {_fmt(row['miou'])} | "
                     f"{_fmt(row['agreement'], pct=True)} | {lat} |")
    lines.append(f"| {device_model} tiled on {scene} | {_fmt(result.device_miou)} | - | - |")
    lines.append(f"\noverlay: {result.overlay}\ntotal time: {result.seconds:.0f} s")
    return "\n".join(lines)
