"""Adaptation to unlabelled scenes: pseudo-label selection, mixed crops, the adapted run, the CLI.

The selection is checked on hand-built probability maps with exact expected masks; one tiny
source run (64x64 crops of generated scenes) is adapted to generated scenes it has not seen.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeseg.adaptation.mixing import MixedSampler, from_pseudo
from edgeseg.adaptation.pseudo import class_thresholds, confidence, pseudo_labels, select
from edgeseg.data import Sample, load_split, synthetic
from edgeseg.data.pipeline import Augment
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable

N = 255  # ignore


def two_class_probs(conf_of_class0: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """HxWx2 probabilities: the predicted class gets ``conf``, the other ``1 - conf``."""
    p = np.where(predicted == 0, conf_of_class0, 1.0 - conf_of_class0)
    return np.stack([p, 1.0 - p], axis=-1).astype(np.float32)


def probs_from(labels: np.ndarray, conf: np.ndarray, k: int = 2) -> np.ndarray:
    """HxWxK probabilities whose argmax is ``labels`` with probability ``conf``."""
    rest = (1.0 - conf) / (k - 1)
    out = np.repeat(rest[..., None], k, axis=-1)
    np.put_along_axis(out, labels[..., None].astype(np.int64), conf[..., None], axis=-1)
    return out.astype(np.float32)


def test_only_pixels_above_the_threshold_keep_a_label_without_class_balance():
    labels = np.array([[0, 0, 1], [1, 0, 1]])
    conf = np.array([[0.95, 0.6, 0.92], [0.85, 0.9, 0.99]])
    chosen = pseudo_labels([probs_from(labels, conf)], threshold=0.9, portion=0.0)
    np.testing.assert_array_equal(chosen.masks[0], [[0, N, 1], [N, 0, 1]])
    np.testing.assert_array_equal(chosen.predicted, [3, 3])
    np.testing.assert_array_equal(chosen.kept, [2, 2])
    np.testing.assert_allclose(chosen.thresholds, [0.9, 0.9])
    assert chosen.kept_share == pytest.approx(4 / 6)


def test_a_rare_class_keeps_its_most_confident_pixels_below_the_threshold():
    # class 0: common and confident; class 1: rare, never above 0.9, split over two images
    a_labels = np.array([[0, 0, 0, 0], [0, 0, 1, 1]])
    a_conf = np.array([[0.95, 0.96, 0.97, 0.98], [0.99, 0.91, 0.55, 0.70]])
    b_labels = np.array([[0, 0, 0, 0], [0, 0, 1, 1]])
    b_conf = np.array([[0.93, 0.94, 0.92, 0.97], [0.96, 0.95, 0.65, 0.60]])
    probs = [probs_from(a_labels, a_conf), probs_from(b_labels, b_conf)]

    plain = pseudo_labels(probs, threshold=0.9, portion=0.0)
    assert plain.kept[1] == 0  # a global threshold alone leaves the rare class nothing

    balanced = pseudo_labels(probs, threshold=0.9, portion=0.5)
    # its top half over both images: 0.70 and 0.65; every confident class-0 pixel stays
    np.testing.assert_array_equal(balanced.masks[0], [[0, 0, 0, 0], [0, 0, N, 1]])
    np.testing.assert_array_equal(balanced.masks[1], [[0, 0, 0, 0], [0, 0, 1, N]])
    np.testing.assert_allclose(balanced.thresholds, [0.9, 0.65], rtol=1e-6)
    np.testing.assert_array_equal(balanced.kept, [12, 2])
    np.testing.assert_allclose(balanced.class_shares(), [1.0, 0.5])


def test_the_class_quantile_never_raises_the_threshold():
    labels = np.zeros((1, 10), np.uint8)
    conf = np.linspace(0.5, 0.99, 10)[None]
    # the top 20 % of class 0 start at 0.94; the global 0.7 keeps more
    chosen = pseudo_labels([probs_from(labels, conf)], threshold=0.7, portion=0.2)
    assert chosen.thresholds[0] == pytest.approx(0.7)
    np.testing.assert_array_equal(chosen.masks[0][0] == 0, conf[0] >= 0.7)
    # with a threshold of 1 only the top 20 % stay
    top = pseudo_labels([probs_from(labels, conf)], threshold=1.0, portion=0.2)
    np.testing.assert_array_equal(top.masks[0][0], [N] * 8 + [0, 0])


def test_pixels_without_data_stay_ignore_and_do_not_count():
    labels = np.array([[0, 1], [1, 0]])
    probs = probs_from(labels, np.full((2, 2), 0.99))
    predicted = np.array([[0, N], [1, 0]], np.uint8)  # the Segmenter's mask: 255 without data
    chosen = pseudo_labels([probs], threshold=0.5, portion=1.0, masks=[predicted])
    np.testing.assert_array_equal(chosen.masks[0], [[0, N], [1, 0]])
    np.testing.assert_array_equal(chosen.predicted, [2, 1])


def test_a_sigmoid_output_is_two_classes():
    p = np.array([[0.97, 0.02, 0.6]], np.float32)[..., None]
    labels, conf = confidence(p)
    np.testing.assert_array_equal(labels, [[1, 0, 1]])
    np.testing.assert_allclose(conf, [[0.97, 0.98, 0.6]], rtol=1e-6)
    chosen = select([labels], [conf], class_thresholds([labels], [conf], 2, 0.9, 0.0))
    np.testing.assert_array_equal(chosen.masks[0], [[1, 0, N]])


def test_selection_settings_are_checked():
    labels, conf = [np.zeros((2, 2), np.uint8)], [np.ones((2, 2), np.float32)]
    with pytest.raises(EdgesegError, match="threshold"):
        class_thresholds(labels, conf, 2, 1.5, 0.2)
    with pytest.raises(EdgesegError, match="portion"):
        class_thresholds(labels, conf, 2, 0.9, -0.1)
    with pytest.raises(EdgesegError, match="no images"):
        pseudo_labels([], 0.9, 0.2)


def flat_samples(value: int, count: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [Sample(f"s{value}_{i}", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8),
                   np.full((40, 48), value, np.uint8)) for i in range(count)]


def test_mixed_crops_take_the_share_of_each_batch_from_the_pseudo_labels():
    labelled, pseudo = flat_samples(0, 2, 0), flat_samples(1, 2, 1)
    sampler = MixedSampler(labelled, pseudo, 5, 16, 0.5, aug=Augment.off())
    sources = [int(mask[0, 0]) for _, mask in sampler.epoch(3, 0, 8)]
    assert sources == [0, 1] * 4  # every batch of 2, 4 or 8 is half and half
    again = [image for image, _ in sampler.epoch(3, 0, 8)]
    np.testing.assert_array_equal(again[5], list(sampler.crops(3, 0, [5]))[0][0])
    assert [from_pseudo(i, 0.25) for i in range(8)] == [False, False, False, True] * 2
    assert not any(from_pseudo(i, 0.0) for i in range(8)) and all(from_pseudo(i, 1.0) for i in range(8))
    sampler.set_pseudo(flat_samples(3, 1, 2))
    assert [int(mask[0, 0]) for _, mask in sampler.epoch(3, 0, 4)] == [0, 3, 0, 3]
    with pytest.raises(EdgesegError, match="between 0 and 1"):
        MixedSampler(labelled, pseudo, 5, 16, 1.5)


# ---- the adapted run (TensorFlow) -------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A labelled dataset (train_*, val_*) and a folder of unlabelled scenes it does not hold."""
    root = tmp_path_factory.mktemp("scenes")
    synthetic.write_dataset(root / "data", 3, (96, 128), seed=0, prefix="train")
    synthetic.write_dataset(root / "data", 2, (80, 100), seed=10, prefix="val")
    synthetic.write_dataset(root / "target", 2, (100, 90), seed=40, prefix="new")
    return root / "data", root / "target" / "images"


@pytest.fixture(scope="module")
def source(scenes, tmp_path_factory):
    from edgeseg.training.train import TrainConfig, train

    data, _ = scenes
    table = ClassTable.load(data / "classes.csv")
    train_s, val_s = load_split(str(data), table, "val_*")
    config = TrainConfig(num_classes=5, class_names=synthetic.CLASSES, crop=64, batch=4,
                         stage1_epochs=0, stage2_epochs=1, steps_per_epoch=4, lr_head=3e-3,
                         val_tile=64, bn_batches=2, val_pattern="val_*", seed=3)
    run = tmp_path_factory.mktemp("runs") / "source"
    train(config, train_s, val_s, run, verbose=False)
    return run


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeseg.cli", "adapt", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def adapted(source, scenes, tmp_path_factory):
    """The source run adapted by the command: two rounds of one epoch."""
    data, images = scenes
    out = tmp_path_factory.mktemp("adapted") / "run"
    proc = cli(source, "--images", images, "--data", data, "--out", out, "--minutes", 0,
               "--epochs", 1, "--rounds", 2, "--steps-per-epoch", 3, "--threshold", 0.8)
    return out, proc


def encoder_batchnorm(model):
    from edgeseg.models import encoder_layers
    from edgeseg.tf_env import tf_keras

    _, keras = tf_keras()
    return [w for layer in encoder_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
            for w in layer.get_weights()]


def test_adapt_cli_end_to_end(adapted):
    out, proc = adapted
    assert proc.returncode == 0, proc.stderr
    assert "adapted to 2 images in 2 rounds, 2 epochs" in proc.stdout
    assert f"model: {out}/model.keras" in proc.stdout
    assert sum("pseudo-labels keep" in line for line in proc.stderr.splitlines()) == 2
    assert "epoch 2/2 stage 2:" in proc.stdout  # one line per epoch without --quiet


def test_the_adapted_run_is_a_run_that_records_what_it_adapted_to(adapted, source, scenes):
    from edgeseg.run import Run
    from edgeseg.training.runs import load_run

    out, _ = adapted
    data, images = scenes
    info = json.loads((out / "config.json").read_text())
    assert info["adapted_to"] == ["new_000", "new_001"]
    assert info["adapted_from"] == str(source.resolve())
    assert info["adapt"]["rounds"] == 2 and info["adapt"]["epochs"] == 1
    assert info["adapt"]["threshold"] == 0.8 and info["adapt"]["minutes"] is None
    assert info["config"]["val_pattern"] == "val_*"
    assert info["config"]["lr_head"] == pytest.approx(3e-3 * 0.2)
    history = (out / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    assert len(history) == 3 and [row.split(",")[header.index("round")] for row in history[1:]] == ["1", "2"]
    summary = json.loads((out / "adapt.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert [r["after_epoch"] for r in summary["rounds"]] == [0, 1]
    assert [r["portion"] for r in summary["rounds"]] == pytest.approx([0.4, 0.5])
    assert 0 < summary["rounds"][0]["kept_share"] <= 1
    assert summary["source_miou"] is not None

    opened = Run.open(out)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["images"] == ["val_000", "val_001"]  # chosen on validation, not on new_*
    assert scores["epoch"] == summary["best_epoch"]
    evaluation = opened.evaluate(data)
    assert evaluation.images == 2
    assert evaluation.scores.miou == pytest.approx(scores["miou"], abs=1e-6)

    before, after = load_run(source)[0], load_run(out)[0]
    assert any(not np.array_equal(a, b) for a, b in zip(before.get_weights(), after.get_weights(),
                                                        strict=True))
    # the encoder's batch-norm statistics are the run's, never re-estimated on the new scenes
    for a, b in zip(encoder_batchnorm(before), encoder_batchnorm(after), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # no temporary folder left


def test_images_that_validate_the_run_are_refused_before_anything_is_written(source, scenes, tmp_path):
    from edgeseg.run import Run

    data, _ = scenes
    with pytest.raises(EdgesegError, match="val_000, val_001 also validate the run"):
        Run.open(source).adapt(data / "images", tmp_path / "out", data=data, epochs=1)
    with pytest.raises(EdgesegError, match="unknown adaptation option rouns"):
        Run.open(source).adapt(data / "images", tmp_path / "out", data=data, rouns=2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(EdgesegError, match="new or empty folder"):
        Run.open(source).adapt(scenes[1], tmp_path / "full", data=data, epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_a_stopped_adaptation_leaves_nothing(source, scenes, tmp_path, monkeypatch):
    from edgeseg.adaptation import labelling
    from edgeseg.run import Run

    data, images = scenes
    real, calls = labelling.pseudo_samples, []

    def stop_at_round_two(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # the run folder holds a model, history and checkpoint by now
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(labelling, "pseudo_samples", stop_at_round_two)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        Run.open(source).adapt(images, tmp_path / "out", data=data, minutes=None, epochs=1,
                               rounds=2, steps_per_epoch=2, verbose=False, log=lines.append)
    assert len(calls) == 2 and sum("round 1: pseudo-labels keep" in line for line in lines) == 1
    assert list(tmp_path.iterdir()) == []


BAD_FOLDERS = {"missing": "--images", "empty": "no images", "not_rgb": "8-bit RGB",
               "corrupt": "unreadable image", "tiny": "smaller than 16 px"}


@pytest.mark.parametrize("make", sorted(BAD_FOLDERS))
def test_a_bad_images_folder_is_one_line(make, source, scenes, tmp_path):
    from PIL import Image

    data, _ = scenes
    images = tmp_path / "images"
    if make != "missing":
        images.mkdir()
    if make == "not_rgb":
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(images / "grey.png")
    elif make == "corrupt":
        (images / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif make == "tiny":
        Image.fromarray(np.zeros((8, 40, 3), np.uint8)).save(images / "strip.png")
    proc = cli(source, "--images", images, "--data", data, "--out", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(images) in lines[0]
    assert BAD_FOLDERS[make] in lines[0]
    assert not (tmp_path / "out").exists()
