"""The run-time spec of a trained model: the one place its run-time settings come from.

A model needs, wherever it runs, the same few settings: its classes and colours, the label
colours no metric counts, the normalisation of its input, its output kind, and the tile and
overlap it is predicted with. Training's validation, ``edgeseg evaluate``, QAT's validation,
the metadata of every exported artifact and the parity check all take them from
:func:`config_spec` (a training configuration) or :func:`run_spec` (a run folder, which adds
the input size, version and validation scores), so each default is written once, here or in
:class:`edgeseg.training.config.TrainConfig`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeseg.training import runs
from edgeseg.training.config import TrainConfig, output_kind
from firmware_bridge.io.classes import ClassTable, parse_colour
from firmware_bridge.runtime.metadata import ModelMetadata

__all__ = ["at_tile", "config_spec", "output_kind", "run_spec", "spec_table"]

SCORE_KEYS = ("miou", "mdice", "pixel_accuracy")
"""Validation scores an artifact's metadata carries."""


def config_spec(config: TrainConfig, *, normalisation: dict | None = None) -> ModelMetadata:
    """What a Segmenter needs to run a model of this configuration (:meth:`TrainConfig.spec`)."""
    return config.spec(normalisation)


def run_spec(run_dir) -> ModelMetadata:
    """The spec of a run folder: :func:`config_spec` plus its version and validation scores.

    Raises:
        EdgesegError: When the folder holds no ``config.json``.
    """
    run_dir = Path(run_dir)
    info = runs.read_json(run_dir / runs.CONFIG)
    config = TrainConfig.from_dict(info["config"])
    scores = runs.read_json(run_dir / runs.SCORES) if (run_dir / runs.SCORES).is_file() else {}
    spec = config_spec(config, normalisation=info.get("normalisation"))
    return dataclasses.replace(
        spec, version=info.get("version", ""),
        scores={k: scores[k] for k in SCORE_KEYS if scores.get(k) is not None})


def at_tile(spec: ModelMetadata, tile: int, overlap: int | None = None) -> ModelMetadata:
    """The spec of the same model exported or predicted at another square tile."""
    return dataclasses.replace(spec, input_size=(tile, tile), tile_size=tile,
                               tile_overlap=spec.tile_overlap if overlap is None else overlap)


def spec_table(spec: ModelMetadata) -> ClassTable:
    """The class table a spec describes (classes, colours and ignore rows)."""
    colours = [parse_colour(c) for c in spec.colours]
    ignore = [parse_colour(c) for c in spec.ignore_colours]
    return ClassTable(list(spec.classes), colours if len(colours) == len(spec.classes) else [],
                      ignore, list(spec.ignore_names)[: len(ignore)])
