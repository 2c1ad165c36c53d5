"""Two-stage transfer learning with per-part learning rates, early stopping and resume.

Stage 1 trains the decoder and head on a frozen encoder; stage 2 fine-tunes the encoder (all,
or from a named block) with its own optimizer at ``encoder_lr_factor`` times the head's rate
(see :mod:`edgeseg.training.stages`). Each epoch is ``steps_per_epoch`` batches of random crops
(:mod:`edgeseg.data.pipeline`), then a validation on full validation images (all, or
``val_images`` of them): the Keras model behind the device's ``Segmenter``, scored by the
device's scoring loop (:mod:`firmware_bridge.evaluate`). The best validation mIoU
is kept as the run's model (the moving average of the weights, ``ema``, is what is validated and
kept); ``patience`` epochs without improvement end stage 1 early (stage 2 starts). A time budget
is wall-clock time for everything (setup, training, validations): stage 1 stops at half of it at
the latest, stage 2 at the budget less the time of one validation, and stage 2's cosine
learning-rate decay spans the time left (or ``stage2_epochs`` when they end the stage sooner).
Without a budget or ``stage2_epochs``, stage 2 trains until the validation score stops improving
(the rate halves after each epoch without a better score; ``patience`` of them end the run).
The run directory is described in :mod:`edgeseg.training.runs`; ``resume=True`` continues from
the last finished epoch.
``strategy`` runs the same loop on several devices or machines (:mod:`edgeseg.training.distribute`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edgeseg.data.pipeline import MEAN, STD
from edgeseg.data.stats import class_pixel_counts
from edgeseg.tf_env import tf_keras
from edgeseg.training import loop as epoch_loop
from edgeseg.training import runs
from edgeseg.training.config import WEIGHTINGS, TrainConfig, output_kind, spread
from edgeseg.training.distribute import make_replicas, place_model, weights_digest
from edgeseg.training.losses import get_loss
from edgeseg.training.runs import load_run
from firmware_bridge import __version__

__all__ = ["TrainConfig", "TrainResult", "class_weights", "load_run", "spread", "train"]

@dataclass
class TrainResult:
    """What a training run produced (``best_miou`` on ``val_images`` validation images)."""

    run_dir: str
    best_miou: float
    best_epoch: int
    epochs: int
    stopped: str
    elapsed_s: float
    history: list[dict]
    val_images: int = 0
    chief: bool = True


def class_weights(config: TrainConfig, masks) -> list[float] | None:
    """Class weights of the configured kind from the training masks (``None``: unweighted)."""
    if config.class_weighting is None:
        return None
    counts, _ = class_pixel_counts(masks, max(config.num_classes, 2))
    return [round(float(w), 6) for w in WEIGHTINGS[config.class_weighting](counts)]


def _start(run_dir: Path, config: TrainConfig, resume: bool) -> tuple[TrainConfig, dict | None]:
    """Return the saved config and state when resuming, else ``(config, None)``."""
    runs.check_out_dir(run_dir, resume)
    if resume and (run_dir / runs.STATE).is_file():
        saved = TrainConfig.from_dict(runs.read_json(run_dir / runs.CONFIG)["config"])
        return saved, runs.read_json(run_dir / runs.STATE)
    return config, None


def _write_config(run_dir: Path, config: TrainConfig, weights, note: str) -> None:

    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json(run_dir / runs.CONFIG, {
        "config": dataclasses.asdict(config), "class_weights": weights, "weights_from": note,
        "version": __version__, "normalisation": {"mean": MEAN, "std": STD},
        "input_size": [config.val_tile] * 2,
        "output": output_kind(config.num_classes),
    })



def train(
    config: TrainConfig, train_samples, val_samples, run_dir, resume: bool = False,
    verbose: bool = True, on_epoch_end=None, strategy: str = "default",
) -> TrainResult:
    """Train a model and fill a run directory (see the module docstring).

    Args:
        config: The run's settings; ignored in favour of the saved one when resuming.
        train_samples: Training :class:`edgeseg.data.Sample` list (8-bit RGB).
        val_samples: Validation samples (full images); empty: keep the last epoch's model.
        run_dir: Output directory.
        resume: Continue the run in ``run_dir`` from its last finished epoch (a fresh start
            when that run never finished an epoch).
        verbose: One line per epoch; progress bars when stderr is a terminal.
        on_epoch_end: Called with each epoch's history row after the checkpoint is written
            (on the chief only).
        strategy: ``"default"``, ``"mirrored"`` or ``"multiworker"``
            (:mod:`edgeseg.training.distribute`); ``config.batch`` is the global batch. Other
            workers than the chief write nothing in ``run_dir``; with ``resume`` they read the
            chief's state and checkpoint from it, so it must be a folder they all see.

    Returns:
        The result, with the per-epoch history.

    Raises:
        EdgesegError: For bad settings, missing weights, an existing run without ``resume``,
            ``resume`` without a run, or a ``run_dir`` holding other files
            (:func:`edgeseg.training.runs.check_out_dir`), a bad ``TF_CONFIG``, or a batch
            that does not split over the replicas.
    """
    started = epoch_loop.clock()
    _, keras = tf_keras()
    replicas = make_replicas(strategy)  # before TensorFlow runs anything else
    run_dir = Path(run_dir)
    if replicas.chief or resume:
        config, state = _start(run_dir, config, resume)
    else:
        state = None
    per_replica = replicas.per_replica_batch(config.batch)
    if replicas.distributed:
        print(f"strategy {strategy} ({replicas.task}): {replicas.num_replicas} replicas in sync, "
              f"global batch {config.batch} = {per_replica} per replica; learning rate "
              f"{config.lr_head:g} as given (not rescaled)", flush=True)
    weights = class_weights(config, [s.mask for s in train_samples])
    keras.utils.set_random_seed(config.seed)
    template, note = runs.initial_model(config, (config.crop, config.crop))
    model, host = place_model(replicas, template)
    if state is None:
        if replicas.chief:
            _write_config(run_dir, config, weights, note)
        state = epoch_loop.new_state()
    elif verbose and replicas.chief:
        print(f"resuming {run_dir} at epoch {state['next_epoch'] + 1}", flush=True)
    loss_fn = get_loss(config.loss, config.num_classes, weights)
    loop = epoch_loop.TrainingLoop(config, model, loss_fn, train_samples, val_samples, run_dir,
                                   state, verbose, started, replicas, host)
    state = loop.run(on_epoch_end)
    if replicas.num_workers > 1:  # every worker reads the weights (a collective)
        print(f"{replicas.task}: finished, weights sha256 {weights_digest(model)}", flush=True)
    return TrainResult(str(run_dir), state["best_miou"], state["best_epoch"], len(state["history"]),
                       state["stopped"] or "epochs", state["elapsed_s"], state["history"],
                       len(loop.val_samples), replicas.chief)
