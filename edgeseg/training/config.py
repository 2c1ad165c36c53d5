"""The configuration of a training run: the one source of its defaults.

:class:`TrainConfig` holds every setting of ``edgeseg train`` (the command's defaults are its
field defaults) and is saved as the run's ``config.json``; QAT, export and evaluation read it
back from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edgeseg.data.pipeline import MEAN, STD, Augment
from edgeseg.data.stats import inverse_frequency_weights, median_frequency_weights
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.metadata import DEFAULT_OVERLAP, ModelMetadata
from firmware_bridge.runtime.standardise import MODES as STANDARDISE_MODES

WEIGHTINGS = {"inverse": inverse_frequency_weights, "median": median_frequency_weights}


def output_kind(num_classes: int) -> str:
    """The output a model of ``num_classes`` gives: one sigmoid channel or a softmax."""
    return "sigmoid" if num_classes == 1 else "softmax"


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
    training masks, or ``None`` (the default: an unweighted loss; ``docs/benchmarks.md``
    compares them).
    ``balance``: share of crops centred on a pixel of a rarely-seen class (0, the default:
    uniform crops; balanced crops can make the rare classes over-predicted on an unseen scene).
    ``stage1_epochs`` ``None``: 1 for a pretrained encoder, 0 (no frozen stage) for a random one.
    ``stage2_epochs``: a cap on the fine-tuning epochs; the cosine learning-rate decay spans
    them (or the time budget, when that ends stage 2 sooner). ``None`` (the default): no cap.
    With a time budget the cosine decay then spans the budget and the run trains until it is
    spent; without one it trains until the validation score stops improving: the learning rate
    halves after every epoch without a better score, and ``patience`` such epochs in a row end
    the run.
    ``ema``: decay per step of the exponential moving average of the weights that is validated
    and saved (:class:`edgeseg.training.averaging.WeightAverage`); 0: the raw weights.
    ``scale_jitter``: crops are zoomed by a factor drawn log-uniformly in
    ``[1 / (1 + s), 1 + s]`` (0: no zoom).
    ``standardise``: ``"image"`` normalises every image by its own band statistics, in training,
    validation and on the device (:mod:`firmware_bridge.runtime.standardise`); ``"none"``:
    the fixed normalisation.
    ``freeze_encoder_bn`` ``None`` means: frozen in stage 2 when the encoder was pretrained.
    ``bn_batches``: batches used to re-estimate batch-norm statistics before each validation.
    ``val_pattern``: the validation file stems (comma-separated globs), as ``edgeseg train``
    chose them (``--val-pattern``, or every 5th image by name); QAT and export reuse it.
    ``val_tile``: tile edge of the validation prediction and input size of the saved model
    (default: ``crop``).
    ``val_images``: validation images scored after each epoch, spread evenly over the sorted
    validation set (default 4; ``None`` or 0: all of them). Fewer leave more of a time budget for training;
    ``edgeseg evaluate`` scores the whole set afterwards.
    """

    num_classes: int
    arch: str = "mobileunet"
    backbone: str = "mobilenetv2_035"
    class_names: list[str] = field(default_factory=list)
    class_colours: list[str] = field(default_factory=list)
    ignore_names: list[str] = field(default_factory=list)
    ignore_colours: list[str] = field(default_factory=list)
    upsampling: str = "bilinear"
    crop: int = 256
    batch: int = 8
    stage1_epochs: int | None = None
    stage2_epochs: int | None = None
    steps_per_epoch: int = 150
    lr_head: float = 2e-3
    encoder_lr_factor: float = 0.1
    loss: str = "ce+dice"
    class_weighting: str | None = None
    encoder_weights: str | None = None
    unfreeze: str | None = None
    freeze_encoder_bn: bool | None = None
    balance: float = 0.0
    augment: bool = True
    colour_jitter: float = 1.0
    scale_jitter: float = 0.0
    standardise: str = "none"
    ema: float = 0.995
    seed: int = 0
    patience: int = 3
    val_pattern: str | None = None
    val_tile: int | None = None
    val_overlap: int = DEFAULT_OVERLAP
    val_images: int | None = 4
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
        stage2 = 1 if self.stage2_epochs is None else self.stage2_epochs
        if self.stage1_epochs < 0 or stage2 < 0 or self.stage1_epochs + stage2 < 1:
            raise EdgesegError("stage epochs must be >= 0 and at least one epoch in total")
        if not 0 <= self.ema < 1:
            raise EdgesegError(f"ema is a decay per step in [0, 1) (0: off), got {self.ema}")
        if self.scale_jitter < 0:
            raise EdgesegError(f"scale_jitter must be >= 0 (0: no zoom), got {self.scale_jitter}")
        if self.standardise not in STANDARDISE_MODES:
            raise EdgesegError(f"standardise must be one of {STANDARDISE_MODES}, "
                               f"got {self.standardise!r}")
        positive = {"crop": self.crop, "batch": self.batch, "steps_per_epoch": self.steps_per_epoch,
                    "lr": self.lr_head, "patience": self.patience, "val_tile": self.val_tile}
        for name, value in positive.items():
            if not value > 0:
                raise EdgesegError(f"{name} must be positive, got {value}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise EdgesegError(f"the time budget must be positive, got {self.time_budget_s / 60:g} "
                               "minutes (leave --minutes out for no limit)")
        if not 0 <= self.balance <= 1:
            raise EdgesegError(f"balance is a share of crops, between 0 and 1, got {self.balance}")
        if not 0 <= self.encoder_lr_factor:
            raise EdgesegError(f"encoder_lr_factor must be >= 0, got {self.encoder_lr_factor}")

    def spec(self, normalisation: dict | None = None) -> ModelMetadata:
        """The run-time spec of a model of this configuration (see :mod:`edgeseg.spec`).

        Args:
            normalisation: ``{"mean": m, "std": s}`` the model was trained with (``None``: the
                training pipeline's).

        Returns:
            Classes, colours, ignore rows, normalisation, output kind, the validation tile and
            overlap (also the tile the artifacts recommend), architecture and backbone.
        """
        norm = normalisation or {"mean": MEAN, "std": STD}
        return ModelMetadata(
            classes=list(self.class_names), colours=list(self.class_colours),
            ignore_names=list(self.ignore_names), ignore_colours=list(self.ignore_colours),
            mean=[norm["mean"]], std=[norm["std"]],
            output=output_kind(self.num_classes),
            input_size=(self.val_tile, self.val_tile), tile_size=self.val_tile,
            tile_overlap=self.val_overlap, arch=self.arch, backbone=self.backbone,
            standardise=self.standardise,
        )

    @property
    def per_image(self) -> bool:
        """Whether every image is normalised by its own band statistics."""
        return self.standardise == "image"

    def augmentation(self):
        """The crops' :class:`~edgeseg.data.pipeline.Augment` (``augment`` off: none at all)."""
        return Augment.with_colour(self.colour_jitter, self.scale_jitter) if self.augment else Augment.off()

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Build from a dict, ignoring unknown keys (older or newer config files)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def epoch_cap(self) -> float:
        """Epochs in all (``inf`` when stage 2 has no cap)."""
        return self.stage1_epochs + (float("inf") if self.stage2_epochs is None else self.stage2_epochs)

    @property
    def pretrained(self) -> bool:
        """Whether the encoder starts from weights."""
        return self.encoder_weights not in (None, "", "none")


def spread(items: list, count: int | None) -> list:
    """``count`` of ``items`` spread evenly from first to last (all when ``count`` is falsy or too big)."""
    items = list(items)
    if not count or count >= len(items):
        return items
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]
