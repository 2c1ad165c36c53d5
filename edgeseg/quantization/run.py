"""QAT of a training run: :func:`qat_run`, the library entry point behind ``edgeseg qat``.

Starts from the run's best float model, trains on crops of the run's training images with the
run's loss and class weights, validates on the run's own validation split (its
``val_pattern``, tile and overlap), and writes ``RUN/qat/weights.npz`` and ``RUN/qat/qat.json``
(history, float and QAT mIoU, and the per-layer report when QAT loses more than ``max_drop``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.data import load_split
from edgeseg.data.pipeline import CropSampler
from edgeseg.quantization.debug import layer_errors
from edgeseg.quantization.qat import qat_finetune, validator
from edgeseg.quantization.store import QAT_DIR, SUMMARY, save_qat
from edgeseg.training import runs
from edgeseg.training.losses import get_loss
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable


@dataclass
class QatOptions:
    """Settings of a QAT run (``None``: the training run's own)."""

    epochs: int = 2
    steps_per_epoch: int | None = None
    batch: int | None = None
    lr: float = 1e-4
    max_drop: float = 1.0


@dataclass
class QatResult:
    """What :func:`qat_run` measured and wrote.

    Attributes:
        folder: ``RUN/qat``.
        float_miou: The float model's mIoU on the validation images (``None`` without any).
        qat_miou: The best QAT epoch's mIoU.
        history: One row per epoch (epoch 0: ranges calibrated, no fine-tuning).
        report: The per-layer int8 error report when QAT lost more than ``max_drop``.
    """

    folder: Path
    float_miou: float | None
    qat_miou: float | None
    history: list[dict] = field(default_factory=list)
    report: object | None = None

    @property
    def drop(self) -> float | None:
        """MIoU points lost against the float model (negative: gained)."""
        if self.float_miou is None or self.qat_miou is None:
            return None
        return 100 * (self.float_miou - self.qat_miou)

    @property
    def passed(self) -> bool:
        """Whether QAT stayed within ``max_drop`` points (no report was needed)."""
        return self.report is None


def qat_run(run_dir, data, classes, options: QatOptions | None = None,
            on_epoch_end: Callable[[dict], None] | None = None) -> QatResult:
    """Quantization-aware fine-tuning of a training run (see the module docstring).

    Args:
        run_dir: The run directory from ``edgeseg train``.
        data: The run's dataset folder.
        classes: Its class table (or CSV).
        options: Epochs, batches, learning rate, the allowed drop.
        on_epoch_end: Called with each history row.

    Returns:
        The result; the QAT weights are written even when it did not pass.

    Raises:
        EdgesegError: For a class table that does not fit the run, or bad data.
    """
    opts = options or QatOptions()
    run = Path(run_dir)
    crop = int(runs.read_json(run / runs.CONFIG)["config"]["crop"])
    model, config = runs.load_run(run, (crop, crop))
    table = classes if isinstance(classes, ClassTable) else ClassTable.load(classes)
    if table.num_classes != max(config.num_classes, 1) and config.num_classes != 1:
        raise EdgesegError(f"{classes} has {table.num_classes} classes, the run {config.num_classes}")
    train, val = load_split(str(data), table, config.val_pattern)
    steps = opts.steps_per_epoch or config.steps_per_epoch
    batch = opts.batch or config.batch
    sampler = CropSampler(train, max(config.num_classes, 2), config.crop, config.balance,
                          config.augmentation(), config.per_image)
    info = runs.read_json(run / runs.CONFIG)
    loss = get_loss(config.loss, config.num_classes, info.get("class_weights"))
    score = validator(config, val, config.val_tile, config.val_overlap)
    result = QatResult(run / QAT_DIR, _float_miou(run, config, val, score), None)

    def record(row: dict) -> None:
        result.history.append(row)
        if on_epoch_end:
            on_epoch_end(row)

    t0 = time.monotonic()
    qat = qat_finetune(model, lambda e: sampler.dataset(config.seed + 1000, e, steps, batch), score,
                       opts.epochs, loss=loss, lr=opts.lr, steps_per_epoch=steps, on_epoch_end=record)
    save_qat(qat, run)
    result.qat_miou = max((r["val_miou"] for r in result.history if r["val_miou"] is not None),
                          default=None)
    if result.drop is not None and result.drop > opts.max_drop:
        probe = next(iter(sampler.dataset(config.seed + 2000, 0, 1, batch)))[0].numpy()
        result.report = layer_errors(model, qat, probe)
    runs.write_json(run / QAT_DIR / SUMMARY, {
        "epochs": opts.epochs, "steps_per_epoch": steps, "batch": batch, "lr": opts.lr,
        "float_miou": result.float_miou, "qat_miou": result.qat_miou, "history": result.history,
        "elapsed_s": round(time.monotonic() - t0, 1), "val_pattern": config.val_pattern,
        "max_drop": opts.max_drop, "passed": result.passed,
        **({"layers": result.report.to_dict()} if result.report else {}),
    })
    return result


def _float_miou(run: Path, config, val, score) -> float | None:
    """The float model's mIoU on the same validation images as the QAT scores.

    The run's ``scores.json`` is reused when it names exactly these images (a run trained with
    ``val_images`` scored a subset; runs older than the ``images`` record are not trusted), else
    the float model is scored with the QAT validator ``score`` (same Segmenter and scoring loop).
    """
    if not val:
        return None
    recorded = runs.read_json(run / runs.SCORES) if (run / runs.SCORES).is_file() else {}
    if recorded.get("images") == [s.stem for s in val]:
        return recorded.get("miou")
    return score(runs.load_run(run, (config.val_tile,) * 2)[0])
