"""``edgeseg qat RUN --data DIR --classes FILE [--epochs N]``: quantization-aware fine-tuning.

Starts from the run's best float model, trains on crops of the run's training images with the
run's loss and class weights, validates on the run's own validation split (its
``val_pattern``, tile and overlap), and writes ``RUN/qat/weights.npz`` and ``RUN/qat/qat.json``
(history, float and QAT mIoU). ``edgeseg export RUN --formats tflite-qat-int8`` converts it.

The activation ranges start from the float model's (as a post-training int8 calibration sets
them), so the QAT model's epoch 0 is what post-training int8 gives, and the best epoch is
kept: QAT never ends worse than that start. When it still loses more than ``--max-drop``
mIoU points against the float model, the command says so, names the layers that lose the
most to quantization (``qat.json`` keeps the whole list) and exits 1; the QAT weights are
still written, for a user who accepts the loss.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``qat`` command."""
    p = sub.add_parser("qat", help="quantization-aware fine-tuning of a trained run (for int8 export)")
    p.add_argument("run", help="run directory from 'edgeseg train'")
    p.add_argument("--data", required=True, help="the run's dataset folder (images/ and masks/)")
    p.add_argument("--classes", required=True, help="class table CSV (name,colour,ignore)")
    p.add_argument("--epochs", type=int, default=2, help="QAT epochs (default 2)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: the run's)")
    p.add_argument("--batch", type=int, help="crops per batch (default: the run's)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (cosine decay)")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="mIoU points the QAT model may lose against the float model before the "
                        "command fails and names the worst layers (default 1)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=run_qat)


def run_qat(args: argparse.Namespace) -> int:
    """Fine-tune, save the QAT weights and a summary; print float vs QAT mIoU."""
    import sys
    import time
    from pathlib import Path

    from edgeseg import runs
    from edgeseg.data import load_split
    from edgeseg.data.pipeline import CropSampler
    from edgeseg.losses import get_loss
    from edgeseg.qat import qat_finetune, validator
    from edgeseg.qat_store import QAT_DIR, SUMMARY, save_qat
    from firmware_bridge.classes import ClassTable
    from firmware_bridge.errors import EdgesegError

    run = Path(args.run)
    model, config = runs.load_run(run, (config_crop(run),) * 2)
    table = ClassTable.load(args.classes)
    if table.num_classes != max(config.num_classes, 1) and config.num_classes != 1:
        raise EdgesegError(f"{args.classes} has {table.num_classes} classes, the run {config.num_classes}")
    train, val = load_split(args.data, table, config.val_pattern)
    steps = args.steps_per_epoch or config.steps_per_epoch
    batch = args.batch or config.batch
    sampler = CropSampler(train, max(config.num_classes, 2), config.crop, config.balance,
                          config.augmentation())
    info = runs.read_json(run / runs.CONFIG)
    loss = get_loss(config.loss, config.num_classes, info.get("class_weights"))
    score = validator(config, val, config.val_tile, config.val_overlap)
    float_miou = _float_miou(run, config, val, score)
    history: list[dict] = []

    def report(row: dict) -> None:
        history.append(row)
        if not args.quiet:
            loss = "ranges calibrated" if row["loss"] is None else f"loss {row['loss']:.4f}"
            miou = row["val_miou"] if row["val_miou"] is not None else float("nan")
            print(f"QAT epoch {row['epoch']}/{args.epochs}: {loss}, val mIoU {miou:.4f}", flush=True)

    t0 = time.monotonic()
    qat = qat_finetune(model, lambda e: sampler.dataset(config.seed + 1000, e, steps, batch), score,
                       args.epochs, loss=loss, lr=args.lr, steps_per_epoch=steps, on_epoch_end=report)
    save_qat(qat, run)
    best = max((r["val_miou"] for r in history if r["val_miou"] is not None), default=None)
    drop = None if float_miou is None or best is None else 100 * (float_miou - best)
    report = None
    if drop is not None and drop > args.max_drop:
        from edgeseg.quant_debug import layer_errors

        probe = next(iter(sampler.dataset(config.seed + 2000, 0, 1, batch)))[0].numpy()
        report = layer_errors(model, qat, probe)
    runs.write_json(run / QAT_DIR / SUMMARY, {
        "epochs": args.epochs, "steps_per_epoch": steps, "batch": batch, "lr": args.lr,
        "float_miou": float_miou, "qat_miou": best, "history": history,
        "elapsed_s": round(time.monotonic() - t0, 1), "val_pattern": config.val_pattern,
        "max_drop": args.max_drop, "passed": report is None,
        **({"layers": report.to_dict()} if report else {}),
    })
    line = f"QAT model: {run / QAT_DIR}"
    if best is not None:
        line += f"; val mIoU {best:.4f}"
    if drop is not None:
        line += f" (float {float_miou:.4f}, {-drop:+.2f} points)"
    print(line)
    if report is None:
        return 0
    print(f"error: the QAT model loses {drop:.2f} mIoU points against the float model (more than "
          f"--max-drop {args.max_drop:g}), and that is its best epoch (epoch 0 is what "
          f"post-training int8 gives).\n{report.text()}\nThe first layers listed lose the "
          "most; a range stretched by outliers, or a signal much smaller than its tensor's range, "
          "is the usual cause. Train the float model longer or from better weights, try more "
          "QAT epochs, or accept the loss (the weights are written).", file=sys.stderr)
    return 1


def config_crop(run) -> int:
    """The training crop edge of a run (QAT trains on crops of that size)."""
    from edgeseg import runs

    return int(runs.read_json(run / runs.CONFIG)["config"]["crop"])


def _float_miou(run, config, val, score) -> float | None:
    """The float model's mIoU on the same validation images as the QAT scores.

    The run's ``scores.json`` is reused when it names exactly these images (a run trained with
    ``val_images`` scored a subset; runs older than the ``images`` record are not trusted), else
    the float model is scored with the QAT validator ``score`` (same tiles, overlap and metric core).
    """
    from edgeseg import runs

    if not val:
        return None
    recorded = runs.read_json(run / runs.SCORES) if (run / runs.SCORES).is_file() else {}
    if recorded.get("images") == [s.stem for s in val]:
        return recorded.get("miou")
    return score(runs.load_run(run, (config.val_tile,) * 2)[0])
