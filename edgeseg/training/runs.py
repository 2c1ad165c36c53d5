"""The run directory of a training: what it holds, how to read it back, where weights come from.

A run directory holds:

* ``config.json``: the :class:`edgeseg.training.train.TrainConfig`, plus the normalisation,
  input size and output kind (:mod:`edgeseg.spec` reads the run-time spec from it);
* ``history.csv``: one row per epoch (stage, loss, validation scores, learning rates, time);
* ``curves.png`` and ``confusion.png``: training curves and the normalised confusion matrix;
* ``model.keras``: the best model (tf-keras format, standard layers only);
* ``scores.json``: the best validation scores (the metric core's ``to_dict``);
* ``state.json`` and ``checkpoints/``: the resume point (weights, both optimizers, counters).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from edgeseg.models import build_model, encoder_layers
from edgeseg.tf_env import tf_keras
from edgeseg.training.config import TrainConfig
from firmware_bridge.errors import EdgesegError
from firmware_bridge.fsutil import atomic_path, atomic_write_bytes

CONFIG, HISTORY, MODEL, SCORES, STATE = (
    "config.json", "history.csv", "model.keras", "scores.json", "state.json",
)
CURVES, CONFUSION, CHECKPOINTS = "curves.png", "confusion.png", "checkpoints"
PRETRAINED_ENCODER = "encoder.h5"
"""File name of the encoder weights written by ``edgeseg pretrain``."""


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict:
    """Read a JSON file of a run directory.

    Raises:
        EdgesegError: When the file is missing.
    """
    if not path.is_file():
        raise EdgesegError(f"{path} not found: is {path.parent} an edgeseg run directory?")
    return json.loads(path.read_text())


def write_history(path: Path, rows: list[dict]) -> None:
    """Write the per-epoch history as CSV (columns of the first row), atomically."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def plot_curves(path: Path, rows: list[dict], val_label: str = "val mIoU") -> None:
    """Training loss and validation mIoU per epoch, stage 2 shaded.

    ``val_label`` names the mIoU line (say which validation images it scores).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [r["loss"] for r in rows], "o-", color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["val_miou"] for r in rows], "s-", color="tab:orange", label=val_label)
    ax2.set_ylabel("validation mIoU")
    stage2 = [r["epoch"] for r in rows if r["stage"] == 2]
    if stage2:
        ax.axvspan(min(stage2) - 0.5, max(stage2) + 0.5, color="0.92", label="stage 2")
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_confusion(path: Path, matrix: np.ndarray, names: list[str]) -> None:
    """The confusion matrix normalised per truth row (recall on the diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.1 * k + 1.5))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _holds_run_config(path: Path) -> bool:
    try:
        return isinstance(read_json(path / CONFIG).get("config"), dict)
    except (EdgesegError, OSError, ValueError, AttributeError):
        return False


def check_out_dir(run_dir, resume: bool) -> Path:
    """Refuse a ``--out`` folder that training would damage, before anything is loaded.

    A run goes into a new or empty folder, or into a folder of an earlier edgeseg run (its
    ``config.json`` is ours): with ``resume`` to continue it, without when it never finished
    an epoch. Anything else would overwrite the user's files.

    Args:
        run_dir: The ``--out`` folder.
        resume: Whether the run continues.

    Returns:
        ``run_dir`` as a Path.

    Raises:
        EdgesegError: For a file, a non-empty folder that is not a run, ``resume`` without a
            run, or a finished run without ``resume``.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise EdgesegError(f"{run_dir}: exists and is not a folder: pass a new folder to --out")
    ours = run_dir.is_dir() and _holds_run_config(run_dir)
    if resume and not ours:
        raise EdgesegError(f"{run_dir}: no edgeseg run to resume here (no {CONFIG} written by "
                           "edgeseg train): leave --resume out to start one")
    if run_dir.is_dir() and not ours and any(run_dir.iterdir()):
        raise EdgesegError(f"{run_dir}: the folder holds files that are not an edgeseg run; "
                           "pass a new or empty folder to --out")
    if ours and not resume and (run_dir / STATE).is_file():
        raise EdgesegError(f"{run_dir} holds a run already: pass --resume or another --out")
    return run_dir


def is_run_dir(path) -> bool:
    """Whether ``path`` is a training run directory (has ``config.json`` and ``model.keras``)."""
    path = Path(path)
    return (path / CONFIG).is_file() and (path / MODEL).is_file()


def load_config(run_dir):
    """The :class:`~edgeseg.training.config.TrainConfig` a run was trained with.

    Raises:
        EdgesegError: When the folder holds no ``config.json``.
    """
    return TrainConfig.from_dict(read_json(Path(run_dir) / CONFIG)["config"])


def load_run(run_dir, input_size: tuple[int, int] | None = None):
    """Load the best model of a run and its configuration.

    Args:
        run_dir: A directory written by ``edgeseg train``.
        input_size: Rebuild the model at another ``(height, width)`` with the same weights
            (the architectures are fully convolutional); ``None`` keeps the training crop size.

    Returns:
        ``(keras_model, TrainConfig)``.

    Raises:
        EdgesegError: When the directory holds no finished model.
    """
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise EdgesegError(f"{run_dir}: not a run directory with a model (needs {CONFIG} and {MODEL})")
    _, keras = tf_keras()
    config = TrainConfig.from_dict(read_json(run_dir / CONFIG)["config"])
    model = keras.models.load_model(run_dir / MODEL, compile=False)
    if input_size is not None and tuple(input_size) != tuple(model.input_shape[1:3]):
        resized = build_model(config.arch, config.backbone, config.num_classes,
                              input_size=tuple(input_size), upsampling=config.upsampling)
        copy_weights(model, resized)
        model = resized
    return model, config


def transfer_weights(src, dst) -> tuple[int, list[str]]:
    """Copy weights layer by layer (same name, same shapes) from ``src`` into ``dst``.

    Returns:
        ``(layers copied, names of dst layers with weights that were left as they were)``.
    """
    by_name = {layer.name: layer for layer in src.layers}
    copied, skipped = 0, []
    for layer in dst.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        other = by_name.get(layer.name)
        theirs = other.get_weights() if other is not None else []
        same = len(theirs) == len(weights)
        if same and all(a.shape == b.shape for a, b in zip(theirs, weights, strict=True)):
            layer.set_weights(theirs)
            copied += 1
        else:
            skipped.append(layer.name)
    return copied, skipped


def copy_weights(src, dst) -> None:
    """Copy every weight of ``dst`` from the same-named layer of ``src`` (another input size).

    Raises:
        EdgesegError: When a layer of ``dst`` has no counterpart (an architecture whose graph
            depends on the input size, such as DeepLabV3+ atrous taps that only exist on
            larger feature maps).
    """
    _, skipped = transfer_weights(src, dst)
    if skipped:
        size = "x".join(str(d) for d in src.input_shape[1:3])
        raise EdgesegError(
            f"the model trained at {size} has no weights for {', '.join(skipped[:3])}"
            f"{' ...' if len(skipped) > 3 else ''} of the {'x'.join(map(str, dst.input_shape[1:3]))} "
            "model (its graph depends on the input size): use the training size, or train at "
            "the size you need"
        )


def initial_model(config, input_size: tuple[int, int]):
    """Build the model of a config with its encoder weights (see ``TrainConfig.encoder_weights``).

    Args:
        config: A :class:`edgeseg.training.train.TrainConfig`.
        input_size: Model input size.

    Returns:
        ``(model, note)`` where ``note`` says where the weights came from.

    Raises:
        EdgesegError: Missing weights, or a run that shares no layers with this model.
    """
    source = config.encoder_weights
    args = (config.arch, config.backbone, config.num_classes)
    kw = {"input_size": input_size, "upsampling": config.upsampling}
    if source in (None, "", "none"):
        return build_model(*args, encoder_weights=None, **kw), "random initialisation"
    path = Path(source)
    if path.is_dir() and (path / PRETRAINED_ENCODER).is_file():
        path = path / PRETRAINED_ENCODER
    if source == "imagenet" or path.is_file():
        weights = "imagenet" if source == "imagenet" else str(path)
        return build_model(*args, encoder_weights=weights, **kw), f"encoder weights {weights}"
    if not is_run_dir(path):
        raise EdgesegError(
            f"encoder weights {source!r}: not a weights file, a run directory or a pretrain "
            "output; pass a Keras-applications no-top .h5 file, 'imagenet', a run dir or 'none'"
        )
    _, keras = tf_keras()
    src = keras.models.load_model(path / MODEL, compile=False)
    model = build_model(*args, encoder_weights=None, **kw)
    copied, skipped = transfer_weights(src, model)
    enc = {layer.name for layer in encoder_layers(model)}
    if any(name in enc for name in skipped) or not copied:
        raise EdgesegError(
            f"run {path} has a different encoder ({src.name}) than {config.backbone}: "
            "train with the same backbone to reuse it"
        )
    note = f"weights of run {path} ({copied} layers" + (f", new {', '.join(skipped)})" if skipped else ")")
    return model, note
