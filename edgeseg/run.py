"""``edgeseg.Run``: a training run as an object, the engine every command drives.

A run is a folder written by training (:mod:`edgeseg.training.runs`). ``Run.train`` makes one,
``Run.open`` reads one; then ``evaluate``, ``qat`` and ``export`` work on it, each with the
run's own run-time spec (:func:`edgeseg.spec.run_spec`), validation images and class table::

    run = Run.train("data/dubai_aerial", "examples/dubai_classes.csv", "runs/dubai",
                    val_pattern="tile7_*", encoder_weights="mobilenet_v2_0.35_224_no_top.h5",
                    minutes=15)
    run.qat("data/dubai_aerial")
    outcome = run.export("runs/dubai/export", formats="tflite-qat-int8",
                         data="data/dubai_aerial")
    print(outcome.parity.table())

``run.adapt(images, out, data=...)`` fine-tunes a run on unlabelled scenes from the deployment
(self-training, :mod:`edgeseg.adaptation`) into a new run folder.

The ``edgeseg`` commands parse their arguments and make one call here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

from edgeseg.adaptation.adapt import AdaptOptions, AdaptResult, adapt_run
from edgeseg.data import load_split
from edgeseg.evaluate import Evaluation, evaluate
from edgeseg.exporting import ExportOutcome, ExportRequest, export_run
from edgeseg.quantization.run import QatOptions, QatResult, qat_run
from edgeseg.spec import run_spec, spec_table
from edgeseg.training import runs
from edgeseg.training.config import TrainConfig
from edgeseg.training.train import TrainResult, train
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable, hex_colour
from firmware_bridge.io.pairs import HOLDOUT_EVERY, find_pairs, holdout_pattern
from firmware_bridge.runtime.metadata import ModelMetadata

_OWN = {"num_classes", "class_names", "class_colours", "ignore_names", "ignore_colours",
        "val_pattern", "time_budget_s"}
TRAIN_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.name not in _OWN)
"""Keyword options of :meth:`Run.train` besides ``val_pattern`` and ``minutes``."""
ADAPT_OPTIONS = tuple(f.name for f in fields(AdaptOptions))
"""Keyword options of :meth:`Run.adapt`."""


def _table(classes: ClassTable | str | Path) -> ClassTable:
    return classes if isinstance(classes, ClassTable) else ClassTable.load(classes)


def validation_pattern(data, val_pattern: str | None, log: Callable[[str], None]) -> str:
    """The validation stems of a new run: the given globs, else every 5th image by name."""
    if val_pattern is not None:
        return val_pattern
    pattern = holdout_pattern(find_pairs(data).pairs)
    log(f"no validation pattern: every {HOLDOUT_EVERY}th image by name validates: {pattern}")
    return pattern


def train_config(table: ClassTable, val_pattern: str | None, minutes: float | None,
                 **options) -> TrainConfig:
    """A :class:`TrainConfig` for a class table and keyword options.

    Raises:
        EdgesegError: For an unknown option (listing the known ones) or a bad value.
    """
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise EdgesegError(f"unknown training option {', '.join(unknown)}; "
                           f"options: {', '.join(TRAIN_OPTIONS)}")
    return TrainConfig(
        num_classes=table.num_classes, class_names=list(table.names),
        class_colours=table.hex_colours(), ignore_names=list(table.ignore_names),
        ignore_colours=[hex_colour(c) for c in table.ignore_colours], val_pattern=val_pattern,
        time_budget_s=None if minutes is None else minutes * 60, **options)


class Run:
    """A training run folder and what can be done with it.

    Attributes:
        path: The run folder.
        result: What the training that made it measured (``None`` for an opened run).
        adaptation: What the adaptation that made it did (:meth:`adapt`; ``None`` otherwise).
    """

    def __init__(self, path: str | Path, result: TrainResult | None = None,
                 adaptation: AdaptResult | None = None) -> None:
        self.path = Path(path)
        self.result = result
        self.adaptation = adaptation

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Open a finished run folder.

        Raises:
            EdgesegError: When the folder holds no run with a model.
        """
        path = Path(path)
        if not runs.is_run_dir(path):
            raise EdgesegError(f"{path}: not an edgeseg run directory (needs the {runs.CONFIG} and "
                               f"{runs.MODEL} that 'edgeseg train' writes)")
        return cls(path)

    @classmethod
    def train(cls, data: str | Path, classes: ClassTable | str | Path, out: str | Path, *,
              val_pattern: str | None = None, minutes: float | None = None, resume: bool = False,
              strategy: str = "default", verbose: bool = True,
              on_epoch_end: Callable[[dict], None] | None = None,
              log: Callable[[str], None] | None = None, **options) -> Run:
        """Train a model on a dataset folder into a new run folder.

        Args:
            data: Dataset folder holding ``images/`` and ``masks/``.
            classes: Class table (or its CSV).
            out: Run folder: new or empty, or an earlier run with ``resume``.
            val_pattern: Validation stems (globs, comma-separated); ``None``: every 5th image
                by name (a resumed run keeps its own).
            minutes: Time budget of the whole run; ``None``: train to a plateau.
            resume: Continue the run in ``out`` where it stopped.
            strategy: ``"default"``, ``"mirrored"`` or ``"multiworker"`` (``TF_CONFIG``).
            verbose: One line per epoch; progress bars on a terminal.
            on_epoch_end: Called with each epoch's history row.
            log: Where notes go (default: stderr).
            **options: :class:`~edgeseg.training.config.TrainConfig` fields, e.g. ``arch``,
                ``backbone``, ``encoder_weights``, ``crop``, ``batch``, ``seed``.

        Returns:
            The run; ``run.result`` holds the best validation mIoU and how training stopped.

        Raises:
            EdgesegError: For bad options, data or output folder (before anything is written).
        """
        say = log or (lambda line: print(line, file=sys.stderr))
        table = _table(classes)
        chief = True
        if strategy == "multiworker":  # a bad TF_CONFIG fails before any data loads
            from edgeseg.training.distribute import read_tf_config

            chief = read_tf_config(os.environ.get("TF_CONFIG")).chief
        if chief:
            runs.check_out_dir(out, resume)
        if resume and val_pattern is None and (Path(out) / runs.CONFIG).is_file():
            val_pattern = runs.load_config(out).val_pattern
        config = train_config(table, validation_pattern(data, val_pattern, say), minutes, **options)
        train_samples, val_samples = load_split(str(data), table, config.val_pattern)
        say(f"{len(train_samples)} training and {len(val_samples)} validation images")
        result = train(config, train_samples, val_samples, out, resume=resume, verbose=verbose,
                       on_epoch_end=on_epoch_end, strategy=strategy)
        return cls(out, result)

    @property
    def config(self) -> TrainConfig:
        """The configuration the run was trained with."""
        return runs.load_config(self.path)

    def spec(self) -> ModelMetadata:
        """The run-time spec: classes, colours, normalisation, output kind, tile, overlap, scores."""
        return run_spec(self.path)

    metadata = spec

    def classes(self) -> ClassTable:
        """The class table the run was trained with (classes, colours, ignore rows)."""
        return spec_table(self.spec())

    def model(self, tile: int | None = None):
        """The best Keras model, at ``tile`` (``None``: the run's validation tile)."""
        edge = tile or self.spec().tile_size
        return runs.load_run(self.path, (edge, edge))[0]

    def evaluate(self, data: str | Path, classes: ClassTable | str | Path | None = None,
                 val_pattern: str | None = None, tile: int | None = None,
                 overlap: int | None = None, progress: bool = False) -> Evaluation:
        """Score the run's model on full images with the run's spec.

        Args:
            data: Dataset folder.
            classes: Class table of ``data`` (``None``: the run's).
            val_pattern: Stems to score (``None``: the run's validation images).
            tile: Tile edge (``None``: the run's).
            overlap: Tile overlap (``None``: the run's).
            progress: Show a progress bar.

        Returns:
            The evaluation; on the run's validation images, training's validation scores.
        """
        table = None if classes is None else _table(classes)
        return evaluate(self.path, str(data), table, val_pattern, tile, overlap, progress)

    def qat(self, data: str | Path, classes: ClassTable | str | Path | None = None,
            options: QatOptions | None = None, on_epoch_end: Callable[[dict], None] | None = None,
            **kw) -> QatResult:
        """Quantization-aware fine-tuning on the run's training images (``RUN/qat``).

        Args:
            data: The run's dataset folder.
            classes: Its class table (``None``: the run's).
            options: Epochs, batches, learning rate, allowed drop; or pass them as keywords.
            on_epoch_end: Called with each history row.
            **kw: :class:`~edgeseg.quantization.run.QatOptions` fields.

        Returns:
            The result (float and QAT mIoU; a per-layer report when QAT lost too much).
        """
        opts = replace(options or QatOptions(), **kw)
        table = self.classes() if classes is None else _table(classes)
        return qat_run(self.path, data, table, opts, on_epoch_end=on_epoch_end)

    def adapt(self, images: str | Path, out: str | Path, *, data: str | Path,
              classes: ClassTable | str | Path | None = None, verbose: bool = True,
              log: Callable[[str], None] | None = None, **options) -> Run:
        """Adapt the run to unlabelled scenes by self-training, into a new run folder.

        Pseudo-labels of the scenes (confident pixels, class-balanced) and the run's labelled
        training crops fine-tune the run's best model in rounds; the run's validation images
        choose the best epoch (:mod:`edgeseg.adaptation`).

        Args:
            images: Folder of unlabelled 8-bit RGB images from the deployment.
            out: The adapted run's folder: new or empty.
            data: The run's dataset folder (training and validation images).
            classes: Class table of ``data`` (``None``: the run's).
            verbose: One line per epoch.
            log: Where notes go (default: stderr).
            **options: :class:`~edgeseg.adaptation.adapt.AdaptOptions` fields, e.g.
                ``minutes``, ``rounds``, ``threshold``, ``portion``, ``mix``.

        Returns:
            The adapted run; ``run.result`` holds its fine-tuning's result and
            ``run.adaptation`` the rounds' pseudo-labels.

        Raises:
            EdgesegError: For an unknown option or a bad value, a bad images folder, ``out``
                or data, or images that also validate the run (before anything is written).
        """
        unknown = sorted(set(options) - set(ADAPT_OPTIONS))
        if unknown:
            raise EdgesegError(f"unknown adaptation option {', '.join(unknown)}; "
                               f"options: {', '.join(ADAPT_OPTIONS)}")
        table = None if classes is None else _table(classes)
        result = adapt_run(self.path, images, out, data, table, AdaptOptions(**options), log,
                           verbose)
        return Run(out, result.training, result)

    def export(self, out: str | Path, request: ExportRequest | None = None,
               log: Callable[[str], None] | None = None, **kw) -> ExportOutcome:
        """Export every format asked for, calibrated and checked for parity.

        Args:
            out: Output folder.
            request: What to export; or pass its fields as keywords (``formats``, ``data``,
                ``tile="auto"`` ...).
            log: Progress lines.
            **kw: :class:`~edgeseg.exporting.ExportRequest` fields.

        Returns:
            The artifacts, the parity report and the chosen tile.
        """
        return export_run(self.path, out, replace(request or ExportRequest(), **kw), log)
