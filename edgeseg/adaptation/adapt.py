"""Adapt a trained run to unlabelled scenes by self-training: :func:`adapt_run`.

The scenes a model meets after deployment (a new area, season, sensor) are often unlabelled
but available before their masks are needed. Self-training fine-tunes the run on them:

1. **Pseudo-labels.** The current model predicts every unlabelled image whole, tiled with the
   run's tile and overlap and with test-time flips; each pixel keeps its predicted class when
   the model is confident enough, class by class (:mod:`edgeseg.adaptation.pseudo`: every
   pixel above ``threshold``, and at least the top ``portion`` of each class's pixels); the
   rest is ignore.
2. **Fine-tuning.** Batches mix crops of the run's labelled training images and of the
   pseudo-labelled images (``mix`` of them pseudo-labelled), with the run's loss, class weights,
   crops and augmentation, starting from the run's best model, in the training loop of
   ``edgeseg train`` (:class:`edgeseg.training.loop.TrainingLoop`, its stage 2: the encoder
   from the run's ``unfreeze`` block, its batch-norm layers frozen, so their statistics stay
   those of the run and are never re-estimated on the new scenes). The learning rate starts at
   ``lr_factor`` times the run's and decays over the whole budget.
3. **Rounds.** The budget (``minutes``, or ``epochs`` per round) is split into ``rounds``; at
   the end of each round the best model so far labels the images again, with ``portion``
   grown by ``portion_step`` (a better model earns more of its labels).

The run's validation images (its ``val_pattern`` on ``data``) are scored after every epoch and
the best epoch is kept, as in training; the unlabelled images are never scored here, and images
that are also validation images are refused, so the validation score stays a fair choice.

The result is a new run folder like any other (``Run.open(out).evaluate / qat / export``); its
``config.json`` records ``adapted_from`` (the run), ``adapted_to`` (the images' stems) and
``adapt`` (the options), and ``adapt.json`` what each round's pseudo-labels kept. It is written
in a temporary folder beside ``out`` and renamed into place at the end: a failed or stopped
adaptation leaves nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgeseg.adaptation import labelling
from edgeseg.adaptation.labelling import read_images
from edgeseg.adaptation.mixing import MixedSampler
from edgeseg.data import load_split
from edgeseg.spec import config_spec, run_spec, spec_table
from edgeseg.tf_env import tf_keras
from edgeseg.training import runs
from edgeseg.training.config import spread
from edgeseg.training.loop import TrainingLoop, clock, new_state
from edgeseg.training.losses import get_loss
from edgeseg.training.train import TrainResult
from export.keras_backend import keras_segmenter
from firmware_bridge import __version__
from firmware_bridge.errors import EdgesegError
from firmware_bridge.evaluate import score
from firmware_bridge.fsutil import writing
from firmware_bridge.io.classes import ClassTable

if TYPE_CHECKING:
    import numpy as np

    from edgeseg.data.dataset import Sample
    from edgeseg.training.config import TrainConfig
    from edgeseg.training.train import TrainResult
    from firmware_bridge.io.classes import ClassTable

SUMMARY = "adapt.json"
"""What the adaptation did, in the adapted run's folder."""


@dataclass
class AdaptOptions:
    """Settings of a self-training adaptation (``None``: the run's own).

    Attributes:
        minutes: Time budget of the whole adaptation (labelling, training, validation);
            ``None``: no budget (``epochs`` then ends it).
        epochs: Epochs per round; ``None``: the rounds split the time budget evenly.
        rounds: Times the images are pseudo-labelled (the first by the run's model).
        threshold: Confidence above which a pixel always keeps its predicted class.
        portion: Share of each class's predicted pixels kept in round 1, its most confident.
        portion_step: Added to ``portion`` in each further round (at most 1 in all).
        mix: Share of each batch's crops from the pseudo-labelled images.
        lr_factor: Starting learning rates as a fraction of the run's.
        steps_per_epoch: Batches per epoch (``None``: the run's).
        seed: Crop seed (``None``: the run's).
    """

    minutes: float | None = 10.0
    epochs: int | None = None
    rounds: int = 3
    threshold: float = 0.9
    portion: float = 0.4
    portion_step: float = 0.1
    mix: float = 0.5
    lr_factor: float = 0.2
    steps_per_epoch: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.minutes is not None and not self.minutes > 0:
            raise EdgesegError(f"the time budget must be positive minutes, got {self.minutes}")
        if self.minutes is None and not self.epochs:
            raise EdgesegError("adaptation needs an end: give a time budget (--minutes) or "
                               "epochs per round (--epochs)")
        for name in ("epochs", "steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EdgesegError(f"{name} must be at least 1, got {value}")
        if self.rounds < 1:
            raise EdgesegError(f"rounds must be at least 1, got {self.rounds}")
        for name in ("threshold", "portion", "portion_step", "mix"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise EdgesegError(f"{name} must lie between 0 and 1, got {value}")
        if not self.lr_factor > 0:
            raise EdgesegError(f"lr_factor must be positive, got {self.lr_factor}")

    def portion_at(self, round_: int) -> float:
        """The class portion of round ``round_`` (1-based)."""
        return min(1.0, self.portion + (round_ - 1) * self.portion_step)


@dataclass
class AdaptResult:
    """What :func:`adapt_run` did.

    Attributes:
        run_dir: The adapted run.
        adapted_from: The run it started from.
        images: Stems of the unlabelled images adapted to.
        source_miou: The starting model's validation mIoU on the same validation images
            (``None`` without validation images).
        training: The fine-tuning's result (best validation mIoU and epoch, history).
        rounds: Per round: the epoch after which it labelled, the portion, the seconds it
            took and what the pseudo-labels kept (:meth:`PseudoLabels.to_dict`).
    """

    run_dir: Path
    adapted_from: Path
    images: list[str]
    source_miou: float | None
    training: TrainResult | None
    rounds: list[dict] = field(default_factory=list)


def check_out(out: str | Path, source: Path) -> Path:
    """Refuse an output folder that is not new or empty, before anything is loaded.

    Raises:
        EdgesegError: For a file, a folder holding anything, or the run itself.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgesegError(f"{out}: exists and is not a folder: pass a new folder to --out")
    if out.is_dir() and any(out.iterdir()):
        what = "the run being adapted" if out.resolve() == source.resolve() else "files"
        raise EdgesegError(f"{out}: the folder holds {what}; pass a new or empty folder to --out "
                           "(the adapted run is a run of its own)")
    return out


def _table(classes: ClassTable | str | Path | None, source: Path) -> ClassTable:

    if classes is None:
        return spec_table(run_spec(source))
    return classes if isinstance(classes, ClassTable) else ClassTable.load(classes)


def adapted_config(config: TrainConfig, source: Path, opts: AdaptOptions) -> TrainConfig:
    """The configuration of the adapted run: the run's, fine-tuning only, for this budget."""
    return dataclasses.replace(
        config, stage1_epochs=0, stage2_epochs=opts.rounds * opts.epochs if opts.epochs else None,
        time_budget_s=opts.minutes * 60 if opts.minutes else None,
        lr_head=config.lr_head * opts.lr_factor, freeze_encoder_bn=True,
        encoder_weights=str(source.resolve()),
        steps_per_epoch=opts.steps_per_epoch or config.steps_per_epoch,
        seed=config.seed if opts.seed is None else opts.seed)


def _source_miou(source: Path, model, spec, val: list[Sample]) -> float | None:
    """The run's model on the validation images the adaptation scores (its record when it has one)."""
    if not val:
        return None
    recorded = runs.read_json(source / runs.SCORES) if (source / runs.SCORES).is_file() else {}
    if recorded.get("images") == [s.stem for s in val]:
        return recorded.get("miou")
    return score(keras_segmenter(model, spec), ((s.image, s.mask) for s in val)).scores.miou


def adapt_run(run_dir: str | Path, images_dir: str | Path, out_dir: str | Path, data: str | Path,
              classes: ClassTable | str | Path | None = None, options: AdaptOptions | None = None,
              log: Callable[[str], None] | None = None, verbose: bool = True) -> AdaptResult:
    """Adapt a run to a folder of unlabelled images (see the module docstring).

    Args:
        run_dir: The trained run.
        images_dir: Folder of unlabelled 8-bit RGB images from the deployment.
        out_dir: The adapted run's folder: new or empty.
        data: The run's dataset folder (its training images and validation images).
        classes: Class table of ``data`` (``None``: the run's).
        options: Budget, rounds, selection and mix.
        log: Where notes go (default: stderr).
        verbose: One line per epoch.

    Returns:
        What was done; the adapted run is in ``out_dir``.

    Raises:
        EdgesegError: For a folder that is not a run, a bad images folder or ``out_dir``, a
            class table that does not fit the run, images that are also validation images,
            or bad data; nothing is written then.
    """
    started = clock()
    opts = options or AdaptOptions()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    source = Path(run_dir)
    if not runs.is_run_dir(source):
        raise EdgesegError(f"{source}: not an edgeseg run directory (needs the {runs.CONFIG} and "
                           f"{runs.MODEL} that 'edgeseg train' writes)")
    out = check_out(out_dir, source)
    targets = read_images(images_dir)
    config = runs.load_config(source)
    table = _table(classes, source)
    if table.num_classes != max(config.num_classes, 1) and config.num_classes != 1:
        raise EdgesegError(f"the class table has {table.num_classes} classes but the run "
                           f"{config.num_classes}: pass the run's class table with --classes")
    train, val = load_split(str(data), table, config.val_pattern)
    shared = sorted({stem for stem, _ in targets} & {s.stem for s in val})
    if shared:
        raise EdgesegError(f"{images_dir}: {', '.join(shared[:3])}{' ...' if len(shared) > 3 else ''} "
                           f"also validate the run ({config.val_pattern}): the adapted run would "
                           "be chosen on images it adapted to; pass other images with --images")
    say(f"adapting {source} to {len(targets)} unlabelled images; {len(train)} labelled training "
        f"and {len(val)} validation images")
    with staged_folder(out) as tmp:
        result = _adapt(source, targets, train, val, tmp, out, config, opts, say, verbose, started)
    return result


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed onto it when the block succeeds, else removed.

    Args:
        out: The final folder: absent or empty.

    Yields:
        The temporary folder.

    Raises:
        EdgesegError: When the folder cannot be made or renamed (names ``out``).
    """
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual folder mode
    try:
        yield tmp
        with writing(out):
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _adapt(source: Path, targets: list[tuple[str, np.ndarray]], train: list[Sample],
           val: list[Sample], tmp: Path, out: Path, config: TrainConfig, opts: AdaptOptions,
           say: Callable[[str], None], verbose: bool, started: float) -> AdaptResult:
    """Label, fine-tune in rounds and write the run into ``tmp`` (which becomes ``out``)."""
    _, keras = tf_keras()
    cfg = adapted_config(config, source, opts)
    info = runs.read_json(source / runs.CONFIG)
    stems = [stem for stem, _ in targets]
    runs.write_json(tmp / runs.CONFIG, {
        **info, "config": dataclasses.asdict(cfg), "version": __version__,
        "weights_from": f"run {source.resolve()}",
        "adapted_from": str(source.resolve()), "adapted_to": stems,
        "adapt": dataclasses.asdict(opts)})
    keras.utils.set_random_seed(cfg.seed)
    tile = (cfg.val_tile,) * 2
    spec = config_spec(cfg, normalisation=info.get("normalisation"))
    names = list(cfg.class_names) if cfg.num_classes > 1 else ["0", "1"]
    result = AdaptResult(out, source.resolve(), stems, None, None)

    def label(model, round_: int, after_epoch: int) -> list[Sample]:
        t0 = clock()
        samples, chosen = labelling.pseudo_samples(model, spec, targets, opts.threshold,
                                         opts.portion_at(round_))
        seconds = clock() - t0
        result.rounds.append({"round": round_, "after_epoch": after_epoch,
                              "portion": opts.portion_at(round_), "seconds": round(seconds, 1),
                              **chosen.to_dict(names)})
        shares = ", ".join(f"{n} {s:.0%}" for n, s in zip(names, chosen.class_shares(), strict=True))
        say(f"round {round_}: pseudo-labels keep {chosen.kept_share:.0%} of the pixels "
            f"({shares}), {seconds:.0f} s")
        return samples

    source_model = runs.load_run(source, tile)[0]
    sampler = MixedSampler(train, label(source_model, 1, 0), max(cfg.num_classes, 2), cfg.crop,
                           opts.mix, cfg.balance, cfg.augmentation(), cfg.per_image)
    if cfg.time_budget_s and result.rounds[0]["seconds"] > cfg.time_budget_s / 2:
        say(f"labelling the images took {result.rounds[0]['seconds']:.0f} s of the "
            f"{cfg.time_budget_s:.0f} s budget, which leaves little to train: give more --minutes "
            "or fewer images")
    result.source_miou = _source_miou(source, source_model, spec, spread(val, cfg.val_images))
    if result.source_miou is not None:
        say(f"the run's model: val mIoU {result.source_miou:.4f}")
    loss = get_loss(cfg.loss, cfg.num_classes, info.get("class_weights"))
    model = runs.load_run(source, (cfg.crop, cfg.crop))[0]
    loop = TrainingLoop(cfg, model, loss, train, val, tmp, new_state(), verbose, started,
                        sampler=sampler)
    state = loop.state

    def boundary() -> bool:
        done = len(result.rounds)
        if opts.epochs:
            return len(state["history"]) >= done * opts.epochs
        return loop.elapsed() >= done * cfg.time_budget_s / opts.rounds

    def after_epoch(row: dict) -> None:
        row["round"] = len(result.rounds)
        if state["stopped"] or len(result.rounds) >= opts.rounds or not boundary():
            return
        if cfg.time_budget_s:
            needed = result.rounds[-1]["seconds"] + loop.reserve + 0.5 * row["train_s"]
            if cfg.time_budget_s - loop.elapsed() < needed:
                return
        best = runs.load_run(tmp, tile)[0]
        sampler.set_pseudo(label(best, len(result.rounds) + 1, row["epoch"]))

    state = loop.run(after_epoch)
    runs.write_history(tmp / runs.HISTORY, state["history"])
    if state["checkpoint"]:  # the resume point, under the folder's final name
        state["checkpoint"] = str(out.resolve() / runs.CHECKPOINTS / Path(state["checkpoint"]).name)
        runs.write_json(tmp / runs.STATE, state)
    result.training = TrainResult(str(out), state["best_miou"], state["best_epoch"],
                                  len(state["history"]), state["stopped"] or "epochs",
                                  state["elapsed_s"], state["history"], len(loop.val_samples))
    runs.write_json(tmp / SUMMARY, {
        "adapted_from": str(result.adapted_from), "images": stems, "options": dataclasses.asdict(opts),
        "rounds": result.rounds, "source_miou": result.source_miou,
        "best_miou": state["best_miou"] if val else None, "best_epoch": state["best_epoch"],
        "elapsed_s": round(state["elapsed_s"], 1), "val_pattern": cfg.val_pattern})
    return result
