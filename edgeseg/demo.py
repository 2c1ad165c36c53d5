"""The end-to-end demo: train -> QAT -> export -> tiled device inference -> validation.

It drives the engine the commands drive (:class:`edgeseg.Run`: train, QAT, export with
parity) and the device library (``firmware_bridge``: a Segmenter, tiled prediction,
validation), printing before each step the command that does the same by hand, on a built-in
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

from edgeseg.data import synthetic
from edgeseg.models.backbones import keras_cache_file
from edgeseg.quantization.run import QatOptions
from edgeseg.run import Run
from edgeseg.training.pretrain import PretrainConfig, pretrain_folder
from firmware_bridge.errors import EdgesegError
from firmware_bridge.evaluate import validate_folder
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.pairs import matches
from firmware_bridge.io.raster import predict_file
from firmware_bridge.runtime.backends import model_suffixes
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

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


def _show(prog: str, argv: list[str]) -> None:
    """Print the command that does the next step by hand."""
    print(f"\n$ {prog} {shlex.join(argv)}", flush=True)


def _find_weights(opts: DemoOptions) -> str | None:
    """The encoder weights: the option's, else Keras's cached ImageNet ones, else ``None``."""
    if opts.weights == "pretrain":
        return None
    if opts.weights:
        return opts.weights
    return "imagenet" if keras_cache_file(BACKBONE) else None


def _generate(opts: DemoOptions, root: Path) -> tuple[Path, Path, str, Path]:
    """Write the generated dataset, and a large scene in a dataset of its own."""
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
        config = PretrainConfig(backbone=BACKBONE, crop=opts.crop, seed=opts.seed,
                                time_budget_s=opts.pretrain_minutes * 60)
        _show("edgeseg", ["pretrain", "--images", str(data / "images"), "--out", str(root / "pretrain"),
                          "--crop", str(opts.crop), "--minutes", str(opts.pretrain_minutes),
                          "--seed", str(opts.seed)])
        pretrain_folder(data / "images", root / "pretrain", config)
        weights = str(root / "pretrain")
    options = dict(arch="mobileunet", backbone=BACKBONE, encoder_weights=weights, crop=opts.crop,
                   batch=opts.batch, steps_per_epoch=opts.steps_per_epoch,
                   stage1_epochs=opts.stage1_epochs, stage2_epochs=opts.stage2_epochs,
                   seed=opts.seed, val_tile=opts.crop,
                   val_images=0)  # the float mIoU in the final table: every validation image
    _show("edgeseg", ["train", "--data", str(data), "--classes", str(classes), "--out", str(root / "run"),
                      *(["--val-pattern", val_pattern] if val_pattern else []),
                      *[a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))],
                      *(["--minutes", str(opts.train_minutes)] if opts.train_minutes else [])])
    run = Run.train(data, classes, root / "run", val_pattern=val_pattern, minutes=opts.train_minutes,
                    log=lambda line: print(line, flush=True), **options)
    print(f"best val mIoU {run.result.best_miou:.4f} at epoch {run.result.best_epoch}", flush=True)
    val_pattern = run.config.val_pattern
    _show("edgeseg", ["qat", str(run.path), "--data", str(data), "--epochs", str(opts.qat_epochs),
                      "--steps-per-epoch", str(opts.qat_steps), "--max-drop", str(opts.qat_max_drop)])
    qat = run.qat(data, classes, QatOptions(opts.qat_epochs, opts.qat_steps, max_drop=opts.qat_max_drop))
    if not qat.passed:
        raise EdgesegError(f"the QAT model loses {qat.drop:.2f} mIoU points against the float model "
                           f"(more than {opts.qat_max_drop:g}):\n{qat.report.text()}")
    export_dir = root / "export"
    _show("edgeseg", ["export", str(run.path), "--formats", ",".join(opts.formats), "--out",
                      str(export_dir), "--data", str(data), "--input-size", str(opts.crop)])
    outcome = run.export(export_dir, formats=opts.formats, data=data, classes=classes,
                         input_size=opts.crop, log=lambda line: print(line, flush=True))
    if outcome.parity is not None:
        print(outcome.parity.table(), flush=True)
    if not outcome.ok:
        raise EdgesegError(outcome.refused or "; ".join(outcome.parity.failures()))
    models = {a.path.name: a.path for a in outcome.artifacts if a.path.suffix in model_suffixes()}
    if not models:
        raise EdgesegError(f"{export_dir}: the export wrote no model a runtime opens")
    device_model = next(iter(models.values()))
    target = large if large is not None else data
    pattern = "*" if large is not None else val_pattern
    images = sorted(p for p in (target / "images").iterdir() if matches(p.stem, pattern))
    pred_dir = root / "predict"
    pred_dir.mkdir()
    _show("edgeseg-run", ["predict", str(device_model), str(images[0]), "--out", str(pred_dir), "--overlay"])
    segmenter = Segmenter(device_model)
    for path in predict_file(segmenter, images[0], pred_dir, with_overlay=True).files:
        print(path)
    val_root = target if large is not None else _val_subset(data, val_pattern, root / "val_subset")
    _show("edgeseg-run", ["validate", str(device_model), "--data", str(val_root)])
    scored, _ = validate_folder(segmenter, val_root, ClassTable.load(classes))
    print(scored.scores.table())
    result = DemoResult(
        float_miou=_read(run.path / "scores.json", "miou"),
        qat_miou=qat.qat_miou,
        parity=outcome.parity.to_dict()["artifacts"],
        device_miou=scored.scores.miou,
        latency_ms=_latency(models),
        overlay=str(next(pred_dir.glob("*_overlay.png"), "")),
        seconds=round(time.monotonic() - t0, 1),
    )
    (root / "summary.json").write_text(json.dumps(asdict(result), indent=2))
    print("\n" + summary_table(result, device_model.name, images[0].name))
    return result


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
