"""The epoch loop behind :func:`edgeseg.training.train.train`: stages, time budget, validation, resume.

State that must survive a kill lives in the JSON ``state`` dict (next epoch, best score,
epochs without improvement, elapsed seconds, checkpoint prefix, history); the weights and
both optimizers live in a ``tf.train.Checkpoint`` written after every epoch. The
checkpoint is written first and ``state.json`` last, so a kill at any moment leaves a
consistent resume point. Crops depend only on ``(seed, epoch, index)``, so a resumed run
trains on what the uninterrupted run would have.

Under a ``tf.distribute`` strategy (:mod:`edgeseg.training.distribute`) every worker runs this
loop: each takes its share of every global batch, every worker re-estimates batch-norm
statistics on the same crops, only the chief validates and writes the run folder, and the
chief's learning rate, stop and next-epoch decisions reach the others through a collective.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from edgeseg.data.pipeline import CropSampler
from edgeseg.models import build_model
from edgeseg.tf_env import tf_keras
from edgeseg.training import runs
from edgeseg.training.averaging import WeightAverage
from edgeseg.training.config import spread
from edgeseg.training.distribute import Replicas, ScratchDir, host_copy, local_batchnorm
from edgeseg.training.stages import (
    cosine_factor,
    make_optimizers,
    make_train_step,
    recalibrate_batchnorm,
    set_stage,
    top_block,
)
from export.keras_backend import keras_segmenter
from firmware_bridge.errors import EdgesegError
from firmware_bridge.evaluate import score
from firmware_bridge.runtime.tiling import tile_boxes

clock = time.monotonic
"""The loop's clock (seconds); tests replace it to check the time budget without waiting."""


STOPS = (None, "early stopping", "time budget", "epochs")
"""Values of ``state["stopped"]``, by the code the chief sends to the other workers."""


def new_state() -> dict:
    """The state of a run that has not trained yet."""
    return {"next_epoch": 0, "best_miou": -1.0, "best_epoch": -1, "bad_epochs": 0,
            "elapsed_s": 0.0, "checkpoint": None, "stage": 0, "stage2_start_s": None,
            "stopped": None, "plateaus": 0, "history": []}


class TrainingLoop:
    """One run's model, data and state, stepped epoch by epoch.

    Args:
        config: :class:`edgeseg.training.train.TrainConfig`.
        model: Training model (crop-sized input) with its initial weights.
        loss_fn: ``loss(y_true, y_pred)``.
        train_samples: Training samples.
        val_samples: Full validation images (may be empty); ``config.val_images`` of them are scored.
        run_dir: Run directory (``config.json`` already written).
        state: :func:`new_state` or the saved state of the run being resumed.
        verbose: One line per epoch; progress bars when stderr is a terminal.
        started: :func:`clock` when the run (re)started; setup counts against the budget.
        replicas: The strategy (:func:`edgeseg.training.distribute.make_replicas`); ``None``:
            one process on one device. ``model`` must then be placed under it.
        host: The same model outside the strategy
            (:func:`edgeseg.training.distribute.place_model`); ``None``: ``model``.
        sampler: Where the training crops come from (``None``: a
            :class:`~edgeseg.data.pipeline.CropSampler` over ``train_samples`` with the
            config's crop, balance and augmentation).

    """

    def __init__(self, config, model, loss_fn, train_samples, val_samples, run_dir: Path,
                 state: dict, verbose: bool = True, started: float | None = None,
                 replicas: Replicas | None = None, host=None,
                 sampler: CropSampler | None = None) -> None:

        self.config, self.model, self.loss_fn, self.state = config, model, loss_fn, state
        self.replicas = replicas or Replicas("default", None)
        self.host = model if host is None else host
        self.chief = self.replicas.chief
        verbose = verbose and self.chief
        all_val = list(val_samples)
        if config.stage2_epochs is None and not config.time_budget_s and not all_val:
            raise EdgesegError("without validation images, training needs an end: give a time "
                               "budget (--minutes) or --stage2-epochs")
        self.val_samples, self.run_dir = spread(all_val, config.val_images), Path(run_dir)
        scored = len(self.val_samples)
        self.val_label = ("val mIoU" if scored == len(all_val)
                          else f"val mIoU ({scored} of {len(all_val)} images)")
        self.verbose, self.bars = verbose, verbose and sys.stderr.isatty()
        k = max(config.num_classes, 2)
        self.names = config.class_names if config.num_classes > 1 else ["0", "1"]
        self.sampler = sampler if sampler is not None else CropSampler(
            train_samples, k, config.crop, config.balance, config.augmentation(),
            config.per_image)
        if not self.chief:  # validation and the saved model are the chief's
            self.val_samples = []
        self.val_model = self.val_segmenter = None
        if self.chief:
            self.val_model = build_model(config.arch, config.backbone, config.num_classes,
                                         input_size=(config.val_tile,) * 2, upsampling=config.upsampling)
            self.val_segmenter = keras_segmenter(self.val_model, config.spec())
        self.scratch = None if self.chief else ScratchDir()
        self.freeze_bn = (config.pretrained if config.freeze_encoder_bn is None
                          else config.freeze_encoder_bn)
        self.val_cost = self._estimate_val_cost()
        self.reserve = self.val_cost + 5.0  # time after training: validation, saving, plots
        self.clock = (started or clock()) - state["elapsed_s"]
        self.stage = 0
        self.average: WeightAverage | None = None
        # with a budget and no epoch cap, stage 2's schedule is the budget: no early stop
        self.time_scheduled = bool(config.time_budget_s) and config.stage2_epochs is None

    def elapsed(self) -> float:
        """Seconds of this run so far (across resumes)."""
        return clock() - self.clock

    def _estimate_val_cost(self) -> float:
        """Seconds a validation will take, from one timed batch of tiles (also compiles it)."""
        if not self.val_samples:
            return 0.0
        tile = self.config.val_tile
        batch = np.zeros((4, tile, tile, 3), np.float32)
        self.val_segmenter.backend.run(batch)
        t0 = clock()
        self.val_segmenter.backend.run(batch)
        per_tile = (clock() - t0) / 4
        tiles = sum(len(tile_boxes(*(max(d, tile) for d in s.mask.shape), tile, self.config.val_overlap))
                    for s in self.val_samples)
        return 1.2 * per_tile * tiles

    def _deadline(self, stage: int) -> float:
        """Elapsed seconds at which a stage stops training: stage 1 at most half the budget."""
        budget = self.config.time_budget_s
        if not budget:
            return float("inf")
        return budget / 2 if stage == 1 else budget

    def _enter_stage(self, stage: int) -> None:
        """Freeze / unfreeze, new optimizers and step; restore the checkpoint when resuming."""
        tf, _ = tf_keras()
        c, state = self.config, self.state
        block = top_block(c.backbone) if c.unfreeze == "top" else c.unfreeze
        enc_vars, head_vars = set_stage(self.model, stage, block, self.freeze_bn)
        with self.replicas.scope():
            self.enc_opt, self.head_opt = make_optimizers(enc_vars, head_vars, c.lr_head,
                                                          c.encoder_lr_factor)
            self.average = WeightAverage(enc_vars + head_vars, c.ema) if c.ema else None
        strategy = self.replicas.strategy if self.replicas.distributed else None
        self.step = make_train_step(self.model, self.loss_fn, enc_vars, head_vars, self.enc_opt,
                                    self.head_opt, strategy, self.average)
        parts = {"head_opt": self.head_opt, **({"enc_opt": self.enc_opt} if self.enc_opt else {})}
        if self.average is not None:
            parts["average"] = self.average.trackables()
        self.ckpt = tf.train.Checkpoint(model=self.model, **parts)
        if self.stage == 0 and state["checkpoint"]:
            target = self.ckpt if state["stage"] == stage else tf.train.Checkpoint(model=self.model)
            target.read(state["checkpoint"]).assert_existing_objects_matched()
            if target is not self.ckpt and self.average is not None:
                self.average.reset()
        if stage == 2 and state["stage2_start_s"] is None:
            state["stage2_start_s"] = self.elapsed()
        self.stage = stage

    def _progress(self, epoch: int, i: int) -> float | None:
        """Stage 2's progress at step ``i`` of ``epoch``: by steps or by the budget, the further.

        ``None`` when neither bounds it (no epoch cap, no budget): the rate then halves on plateaus.
        """
        c = self.config
        progress = 0.0
        if c.stage2_epochs is not None:
            done = (epoch - c.stage1_epochs) * c.steps_per_epoch + i
            progress = done / (c.stage2_epochs * c.steps_per_epoch)
        elif not c.time_budget_s:
            return None
        if c.time_budget_s:
            t2 = self.state["stage2_start_s"]
            span = max(c.time_budget_s - self.reserve - t2, 1.0)
            progress = max(progress, (self.elapsed() - t2) / span)
        return progress

    def _lr_factor(self, epoch: int, i: int) -> float:
        """Stage 2's learning rate as a fraction of the start's.

        Cosine decay over the progress, or halved once per epoch without a better score when
        nothing bounds the stage.
        """
        progress = self._progress(epoch, i)
        return 0.5 ** self.state.get("plateaus", 0) if progress is None else cosine_factor(progress)

    def _set_lr(self, f: float) -> None:
        """Both optimizers' learning rates at ``f`` times their stage-2 start."""
        c = self.config
        self.head_opt.learning_rate = c.lr_head * f
        if self.enc_opt:
            self.enc_opt.learning_rate = c.lr_head * c.encoder_lr_factor * f

    def _train_epoch(self, epoch: int) -> list[float]:
        c, deadline = self.config, self._deadline(self.stage)
        batches = self._batches(epoch)
        if self.bars:
            from tqdm import tqdm

            batches = tqdm(batches, total=c.steps_per_epoch, desc=f"epoch {epoch + 1}{self._of()}",
                           leave=False)
        losses: list[float] = []
        t0 = last = clock()
        self.slowest_step_s = 0.0
        for i, (images, masks) in enumerate(batches):
            # the chief's clock decides for every worker: the same learning rate, the same steps
            factor = self._lr_factor(epoch, i) if self.stage == 2 else 1.0
            past = i > 0 and self.elapsed() + self.reserve >= deadline
            factor, past = self.replicas.from_chief([factor, past])
            if past:
                break
            if self.stage == 2:
                self._set_lr(factor)
            losses.append(float(self.step(images, masks)))
            if self.bars:
                batches.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            now = clock()
            self.slowest_step_s, last = max(self.slowest_step_s, now - last), now
        self.train_s = clock() - t0
        return losses

    def _batches(self, epoch: int):
        """The epoch's batches: this worker's share of each global batch, per replica."""
        c, r = self.config, self.replicas
        if not r.distributed:
            return self.sampler.dataset(c.seed, epoch, c.steps_per_epoch, c.batch)

        def shard(ctx):
            return self.sampler.dataset(c.seed, epoch, c.steps_per_epoch, c.batch,
                                        shard=(ctx.input_pipeline_id, ctx.num_input_pipelines),
                                        replica_batch=ctx.get_per_replica_batch_size(c.batch))

        return r.strategy.distribute_datasets_from_function(shard)

    def _of(self) -> str:
        """``"/N"``: the epochs in all, when capped."""
        cap = self.config.epoch_cap
        return "" if cap == float("inf") else f"/{int(cap)}"

    def _validate(self, epoch: int):
        """Re-estimate batch-norm statistics, copy the (averaged) weights to the tile model, score it."""
        c = self.config
        t0 = clock()
        recal = self.sampler.dataset(c.seed + 1, epoch, c.bn_batches, c.batch)
        with self.average.swapped() if self.average is not None else nullcontext():
            with local_batchnorm(self.model, self.replicas):  # the same crops on every worker
                recalibrate_batchnorm(self.model, (images for images, _ in recal))
            host = host_copy(self.model, self.host)
            if self.chief:
                runs.copy_weights(host, self.val_model)
        scores = None
        if self.val_samples:
            scores = score(self.val_segmenter, ((v.image, v.mask) for v in self.val_samples),
                           self.names, progress=self.bars, total=len(self.val_samples)).scores
        self.val_cost = clock() - t0
        return scores

    def _record(self, epoch: int, losses: list[float], scores) -> dict:
        """Keep the model when it is the best so far; append and plot the history row."""
        state, nan = self.state, float("nan")
        row = {"epoch": epoch + 1, "stage": self.stage, "steps": len(losses),
               "loss": round(float(np.mean(losses)), 6) if losses else nan}
        for key in ("miou", "mdice", "pixel_accuracy"):
            row[f"val_{key}"] = round(getattr(scores, key), 6) if scores else nan
        row["lr_head"] = float(self.head_opt.learning_rate.numpy())
        row["lr_encoder"] = float(self.enc_opt.learning_rate.numpy()) if self.enc_opt else 0.0
        row["train_s"], row["val_s"] = round(self.train_s, 1), round(self.val_cost, 1)
        # the longest step (data wait included): a stall shows here, not in the mean
        row["slowest_step_s"] = round(self.slowest_step_s, 2)
        row["elapsed_s"] = round(self.elapsed(), 1)
        for i, name in enumerate(self.names):
            row[f"iou_{name}"] = round(float(scores.iou[i]), 6) if scores else nan
        miou = scores.miou if scores else float(epoch)  # no validation: keep the latest
        if miou > state["best_miou"]:
            state.update(best_miou=miou, best_epoch=epoch + 1, bad_epochs=0)
            with runs.atomic_path(self.run_dir / runs.MODEL) as tmp:
                self.val_model.save(tmp)
            if scores:
                images = [s.stem for s in self.val_samples]
                runs.write_json(self.run_dir / runs.SCORES, {"epoch": epoch + 1, "images": images,
                                                             **scores.to_dict()})
                runs.plot_confusion(self.run_dir / runs.CONFUSION, scores.matrix, self.names)
        else:
            state["bad_epochs"] += 1
        state["history"].append(row)
        runs.write_history(self.run_dir / runs.HISTORY, state["history"])
        runs.plot_curves(self.run_dir / runs.CURVES, state["history"], self.val_label)
        return row

    def _next_epoch(self, epoch: int) -> int:
        """The epoch to run next; sets ``state["stopped"]`` when training ends."""
        c, state = self.config, self.state
        total, done = c.epoch_cap, self.elapsed() + self.reserve
        epoch += 1
        if self.stage == 1 and (state["bad_epochs"] >= c.patience or done >= self._deadline(1)):
            epoch, state["bad_epochs"] = max(epoch, c.stage1_epochs), 0
        elif self.stage == 2 and state["bad_epochs"] >= c.patience and not self.time_scheduled:
            state["stopped"] = "early stopping"
        if self.stage == 2 and state["bad_epochs"] > 0:
            state["plateaus"] = state.get("plateaus", 0) + 1
        # no new epoch for a few steps only: its validation would cost more than it brings
        if c.time_budget_s and done + 0.25 * self.train_s >= c.time_budget_s:
            state["stopped"] = "time budget"
        if epoch >= total and state["stopped"] is None:
            state["stopped"] = "epochs"
        return epoch

    def _agree(self, epoch: int) -> int:
        """The chief's next epoch, stop and best score, on every worker."""
        state = self.state
        values = [epoch, STOPS.index(state["stopped"]), state["best_miou"], state["best_epoch"]]
        epoch, stop, best, best_epoch = self.replicas.from_chief(values)
        state.update(stopped=STOPS[int(stop)], best_miou=best, best_epoch=int(best_epoch))
        return int(epoch)

    def _save_state(self, epoch: int) -> None:
        state, previous = self.state, self.state.get("own_checkpoint", self.state["checkpoint"])
        # every worker writes (saving may take part in collectives); only the chief's is the run's
        folder = self.run_dir / runs.CHECKPOINTS if self.chief else Path(self.scratch.path)
        prefix = self.ckpt.write(str(folder / f"epoch_{epoch:03d}"))
        if not self.chief:
            state.update(next_epoch=epoch, stage=self.stage, own_checkpoint=prefix)
            return
        state.update(next_epoch=epoch, stage=self.stage, elapsed_s=self.elapsed(), checkpoint=prefix)
        runs.write_json(self.run_dir / runs.STATE, state)
        if previous and previous != prefix:
            for old in Path(previous).parent.glob(Path(previous).name + ".*"):
                old.unlink()

    def run(self, on_epoch_end=None) -> dict:
        """Train until the epochs, the patience or the time budget run out; return the state."""
        try:
            return self._run(on_epoch_end)
        finally:
            if self.scratch is not None:
                self.scratch.close()

    def _run(self, on_epoch_end) -> dict:
        c, state = self.config, self.state
        if self.chief:
            (self.run_dir / runs.CHECKPOINTS).mkdir(exist_ok=True)
        epoch, total = state["next_epoch"], c.epoch_cap
        while state["stopped"] is None and epoch < total:
            stage = 1 if epoch < c.stage1_epochs else 2
            if stage != self.stage:
                self._enter_stage(stage)
            losses = self._train_epoch(epoch)
            t0 = clock()
            scores = self._validate(epoch)
            row = self._record(epoch, losses, scores) if self.chief else None
            epoch = self._agree(self._next_epoch(epoch))
            self._save_state(epoch)
            step_s = self.train_s / max(len(losses), 1)
            self.reserve = max(self.reserve, 1.25 * (clock() - t0) + step_s)
            if self.verbose:
                print(f"epoch {row['epoch']}{self._of()} stage {stage}: loss {row['loss']:.4f}, "
                      f"val mIoU {row['val_miou']:.4f} (best {state['best_miou']:.4f} at "
                      f"{state['best_epoch']}), {row['elapsed_s']:.0f} s", flush=True)
            if on_epoch_end is not None and row is not None:
                on_epoch_end(row)
        return state
