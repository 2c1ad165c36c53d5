"""Two-stage transfer learning with per-part learning rates, early stopping and resume.

Stage 1 trains the decoder and head on a frozen encoder; stage 2 fine-tunes the encoder (all,
or from a named block) with its own optimizer at ``encoder_lr_factor`` times the head's rate
(see :mod:`edgeseg.stages`). Each epoch is ``steps_per_epoch`` batches of random crops
(:mod:`edgeseg.data.pipeline`), then a validation on full validation images (all, or
``val_images`` of them): the Keras model behind the device's ``Segmenter``, scored by the
device's scoring loop (:mod:`firmware_bridge.evaluate`). The best validation mIoU
is kept as the run's model; ``patience`` epochs without improvement end stage 1 early (stage 2
starts) or stage 2 (training ends). A time budget is wall-clock
time for everything (setup, training, validations): stage 1 stops at half of it at the latest,
stage 2 at the budget less the time of one validation, and stage 2's cosine learning-rate decay
follows the time left when that ends the stage sooner than its epochs. The run directory is
described in :mod:`edgeseg.runs`; ``resume=True`` continues from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg import runs
from edgeseg.data.stats import class_pixel_counts, inverse_frequency_weights, median_frequency_weights
from edgeseg.runs import load_run, run_metadata
from firmware_bridge.errors import EdgesegError

__all__ = ["TrainConfig", "TrainResult", "class_weights", "load_run", "run_metadata", "train"]

WEIGHTINGS = {"inverse": inverse_frequency_weights, "median": median_frequency_weights}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``).

    ``encoder_weights``: a Keras-applications no-top ``.h5`` file, ``"imagenet"`` (Keras's
    cache), a run directory (encoder and decoder reused, new head when the classes differ), an
    ``edgeseg pretrain`` output directory, or ``None`` / ``"none"`` (random).
    ``unfreeze``: encoder part trained in stage 2: ``"all"``, ``"top"`` (the blocks after the
    stride-16 skip, ``block_13`` on for MobileNetV2: cheap and, on a CPU budget, better) or a
    block name; ``None``: ``"top"`` for a pretrained encoder, ``"all"`` for a random one.
    ``class_weighting``: ``"median"`` or ``"inverse"`` frequency weights of the loss from the
    training masks, or ``None`` (the default: the class-balanced crops already favour rare
    classes, and on Dubai's tile 7 seven unweighted runs averaged 0.582 mIoU against 0.567 for
    four median-weighted ones).
    ``stage1_epochs`` ``None``: 1 for a pretrained encoder, 0 (no frozen stage) for a random one.
    ``freeze_encoder_bn`` ``None`` means: frozen in stage 2 when the encoder was pretrained.
    ``bn_batches``: batches used to re-estimate batch-norm statistics before each validation.
    ``val_pattern``: the validation file stems (comma-separated globs), as ``edgeseg train``
    chose them (``--val-pattern``, or every 5th image by name); QAT and export reuse it.
    ``val_tile``: tile edge of the validation prediction and input size of the saved model
    (default: ``crop``).
    ``val_images``: validation images scored after each epoch, spread evenly over the sorted
    validation set (``None`` or 0: all of them). Fewer leave more of a time budget for training;
    ``edgeseg evaluate`` scores the whole set afterwards.
    """

    num_classes: int
    arch: str = "mobileunet"
    backbone: str = "mobilenetv2_035"
    class_names: list[str] = field(default_factory=list)
    class_colours: list[str] = field(default_factory=list)
    upsampling: str = "bilinear"
    crop: int = 256
    batch: int = 8
    stage1_epochs: int | None = None
    stage2_epochs: int = 4
    steps_per_epoch: int = 150
    lr_head: float = 2e-3
    encoder_lr_factor: float = 0.1
    loss: str = "ce+dice"
    class_weighting: str | None = None
    encoder_weights: str | None = None
    unfreeze: str | None = None
    freeze_encoder_bn: bool | None = None
    balance: float = 0.5
    augment: bool = True
    colour_jitter: float = 1.0
    seed: int = 0
    patience: int = 3
    val_pattern: str | None = None
    val_tile: int | None = None
    val_overlap: int = 32
    val_images: int | None = None
    bn_batches: int = 8
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != max(self.num_classes, 1):
            raise EdgesegError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.class_weighting not in (None, *WEIGHTINGS):
            raise EdgesegError(f"class_weighting must be one of {sorted(WEIGHTINGS)} or None")
        if self.stage1_epochs is None:
            self.stage1_epochs = 1 if self.pretrained else 0
        if self.unfreeze is None:
            self.unfreeze = "top" if self.pretrained else "all"
        if self.val_tile is None:
            self.val_tile = self.crop
        if self.colour_jitter < 0:
            raise EdgesegError(f"colour_jitter must be >= 0 (0: none), got {self.colour_jitter}")
        if self.val_images is not None and self.val_images < 0:
            raise EdgesegError(f"val_images must be >= 0 (0: all), got {self.val_images}")
        if self.stage1_epochs < 0 or self.stage2_epochs < 0 or self.stage1_epochs + self.stage2_epochs < 1:
            raise EdgesegError("stage epochs must be >= 0 and at least one epoch in total")

    def augmentation(self):
        """The crops' :class:`~edgeseg.data.pipeline.Augment` (``augment`` off: none at all)."""
        from edgeseg.data.pipeline import Augment

        return Augment.with_colour(self.colour_jitter) if self.augment else Augment.off()

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a dict, ignoring unknown keys (older or newer config files)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def pretrained(self) -> bool:
        """Whether the encoder starts from weights."""
        return self.encoder_weights not in (None, "", "none")


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


def spread(items: list, count: int | None) -> list:
    """``count`` of ``items`` spread evenly from first to last (all when ``count`` is falsy or too big)."""
    items = list(items)
    if not count or count >= len(items):
        return items
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def class_weights(config: TrainConfig, masks) -> list[float] | None:
    """Class weights of the configured kind from the training masks (``None``: unweighted)."""
    if config.class_weighting is None:
        return None
    counts, _ = class_pixel_counts(masks, max(config.num_classes, 2))
    return [round(float(w), 6) for w in WEIGHTINGS[config.class_weighting](counts)]


def _start(run_dir: Path, config: TrainConfig, resume: bool) -> tuple[TrainConfig, dict | None]:
    """Return the saved config and state when resuming, else ``(config, None)``."""
    if resume and (run_dir / runs.STATE).is_file():
        saved = TrainConfig.from_dict(runs.read_json(run_dir / runs.CONFIG)["config"])
        return saved, runs.read_json(run_dir / runs.STATE)
    if (run_dir / runs.STATE).is_file():
        raise EdgesegError(f"{run_dir} holds a run already: pass --resume or another --out")
    return config, None


def _write_config(run_dir: Path, config: TrainConfig, weights, note: str) -> None:
    from edgeseg import __version__
    from edgeseg.data.pipeline import MEAN, STD

    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json(run_dir / runs.CONFIG, {
        "config": dataclasses.asdict(config), "class_weights": weights, "weights_from": note,
        "version": __version__, "normalisation": {"mean": MEAN, "std": STD},
        "input_size": [config.val_tile] * 2,
        "output": "sigmoid" if config.num_classes == 1 else "softmax",
    })



def train(
    config: TrainConfig, train_samples, val_samples, run_dir, resume: bool = False,
    verbose: bool = True, on_epoch_end=None,
) -> TrainResult:
    """Train a model and fill a run directory (see the module docstring).

    Args:
        config: The run's settings; ignored in favour of the saved one when resuming.
        train_samples: Training :class:`edgeseg.data.Sample` list (8-bit RGB).
        val_samples: Validation samples (full images); empty: keep the last epoch's model.
        run_dir: Output directory.
        resume: Continue the run in ``run_dir`` from its last finished epoch (a fresh start
            when it holds no state yet).
        verbose: One line per epoch; progress bars when stderr is a terminal.
        on_epoch_end: Called with each epoch's history row after the checkpoint is written.

    Returns:
        The result, with the per-epoch history.

    Raises:
        EdgesegError: For bad settings, missing weights, or an existing run without ``resume``.
    """
    from edgeseg import loop as epoch_loop
    from edgeseg.losses import get_loss
    from edgeseg.tf_env import tf_keras

    started = epoch_loop.clock()
    _, keras = tf_keras()
    run_dir = Path(run_dir)
    config, state = _start(run_dir, config, resume)
    weights = class_weights(config, [s.mask for s in train_samples])
    keras.utils.set_random_seed(config.seed)
    model, note = runs.initial_model(config, (config.crop, config.crop))
    if state is None:
        _write_config(run_dir, config, weights, note)
        state = epoch_loop.new_state()
    elif verbose:
        print(f"resuming {run_dir} at epoch {state['next_epoch'] + 1}", flush=True)
    loss_fn = get_loss(config.loss, config.num_classes, weights)
    loop = epoch_loop.TrainingLoop(config, model, loss_fn, train_samples, val_samples, run_dir,
                                   state, verbose, started)
    state = loop.run(on_epoch_end)
    return TrainResult(str(run_dir), state["best_miou"], state["best_epoch"], len(state["history"]),
                       state["stopped"] or "epochs", state["elapsed_s"], state["history"],
                       len(loop.val_samples))
