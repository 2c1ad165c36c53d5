"""Training: stages, per-part learning rates, batch-norm, reproducibility, resume, evaluate CLI.

One tiny run (64x64 crops of generated scenes, 3 epochs of 6 steps) is shared by the module.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeseg.data import load_split, synthetic
from edgeseg.training.train import TrainConfig, spread, train
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable

WEIGHTS = "weights/mobilenet_v2_0.35_224_no_top.h5"


def tiny_config(**kw):
    base = dict(num_classes=5, class_names=synthetic.CLASSES, crop=64, batch=4, stage1_epochs=1,
                stage2_epochs=2, steps_per_epoch=6, lr_head=3e-3, val_tile=64, bn_batches=2,
                val_pattern="val_*", encoder_weights=None, seed=7,
                val_overlap=16)  # not the default: evaluation must take the run's own
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    synthetic.write_dataset(root, 3, (96, 128), seed=0, prefix="train")
    synthetic.write_dataset(root, 2, (80, 100), seed=10, prefix="val")
    table = ClassTable.load(root / "classes.csv")
    train_s, val_s = load_split(str(root), table, "val_*")
    return root, train_s, val_s


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    _, train_s, val_s = tiny_data
    run = tmp_path_factory.mktemp("runs") / "a"
    return train(tiny_config(), train_s, val_s, run, verbose=False), run


def model_weights(run):
    from edgeseg.training.runs import load_run

    return load_run(run)[0].get_weights()


def build(weights=None, size=64):
    from edgeseg.models import build_model

    return build_model("mobileunet", "mobilenetv2_035", 5, input_size=(size, size), encoder_weights=weights)


def random_batch(seed=0, n=4, size=64):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 5, (n, size, size)).astype(np.uint8)
    return x, y


def test_tiny_run_lowers_loss_and_fills_run_dir(tiny_run):
    result, run = tiny_run
    losses = [row["loss"] for row in result.history]
    assert [row["stage"] for row in result.history] == [1, 2, 2]
    assert losses[-1] < 0.85 * losses[0]
    assert result.stopped == "epochs" and result.epochs == 3
    for name in ("config.json", "history.csv", "curves.png", "confusion.png", "model.keras",
                 "scores.json", "state.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "config.json").read_text())
    assert info["normalisation"] == {"mean": 127.5, "std": 127.5}
    assert info["config"]["class_names"] == synthetic.CLASSES
    assert len((run / "history.csv").read_text().splitlines()) == 4
    best = json.loads((run / "scores.json").read_text())
    assert best["miou"] == pytest.approx(result.best_miou, abs=1e-6)
    assert best["epoch"] == result.best_epoch


def test_resume_reproduces_the_uninterrupted_run(tiny_run, tiny_data, tmp_path):
    result, run = tiny_run
    _, train_s, val_s = tiny_data

    class Killed(Exception):
        pass

    def kill(row):
        raise Killed

    with pytest.raises(Killed):
        train(tiny_config(), train_s, val_s, tmp_path / "b", verbose=False, on_epoch_end=kill)
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["next_epoch"] == 1
    # same seed: the first epoch matches the other run exactly
    assert state["history"][0]["loss"] == result.history[0]["loss"]
    with pytest.raises(EdgesegError, match="--resume"):
        train(tiny_config(), train_s, val_s, tmp_path / "b", verbose=False)
    resumed = train(tiny_config(seed=99), train_s, val_s, tmp_path / "b", resume=True, verbose=False)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in result.history]
    assert resumed.best_miou == result.best_miou
    for a, b in zip(model_weights(run), model_weights(tmp_path / "b"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stage1_leaves_the_encoder_unchanged(shared_path_or_none):
    from edgeseg.models import encoder_layers, head_layers
    from edgeseg.training.losses import get_loss
    from edgeseg.training.stages import make_optimizers, make_train_step, set_stage

    model = build(shared_path_or_none)
    enc_vars, head_vars = set_stage(model, 1)
    assert enc_vars == [] and len(head_vars) == len(model.trainable_weights)
    before = [w.copy() for layer in encoder_layers(model) for w in layer.get_weights()]
    head_before = [w.copy() for layer in head_layers(model) for w in layer.get_weights()]
    opts = make_optimizers(enc_vars, head_vars, 1e-3, 0.1)
    assert opts[0] is None
    step = make_train_step(model, get_loss("ce", 5), enc_vars, head_vars, *opts)
    for i in range(2):
        step(*random_batch(i))
    after = [w for layer in encoder_layers(model) for w in layer.get_weights()]
    for a, b in zip(before, after, strict=True):  # includes batch-norm moving statistics
        np.testing.assert_array_equal(a, b)
    head_after = [w for layer in head_layers(model) for w in layer.get_weights()]
    assert any(not np.array_equal(a, b) for a, b in zip(head_before, head_after, strict=True))


def test_stage2_moves_the_encoder_by_its_own_learning_rate():
    from edgeseg.training.losses import get_loss
    from edgeseg.training.stages import make_optimizers, make_train_step, set_stage

    model = build()
    enc_vars, head_vars = set_stage(model, 2, "all", freeze_encoder_bn=True)
    assert enc_vars and head_vars
    assert not any("gamma" in v.name or "beta" in v.name for v in enc_vars)  # encoder BN frozen
    before = {id(v): v.numpy().copy() for v in enc_vars + head_vars}
    opts = make_optimizers(enc_vars, head_vars, 1e-3, 0.1)
    step = make_train_step(model, get_loss("ce", 5), enc_vars, head_vars, *opts)
    step(*random_batch(3))

    def max_move(variables):
        return max(float(np.abs(v.numpy() - before[id(v)]).max()) for v in variables)

    # Adam's first step moves every weight with a gradient by exactly its learning rate
    assert max_move(enc_vars) == pytest.approx(1e-4, rel=1e-3)
    assert max_move(head_vars) == pytest.approx(1e-3, rel=1e-3)


def test_unfreeze_from_a_block():
    from edgeseg.models import encoder_layers
    from edgeseg.training.stages import set_stage

    model = build()
    set_stage(model, 2, "block_13", freeze_encoder_bn=False)
    enc = encoder_layers(model)
    first = next(i for i, layer in enumerate(enc) if layer.name == "block_13_expand")
    assert not any(layer.trainable for layer in enc[:first])
    assert all(layer.trainable for layer in enc[first:])
    with pytest.raises(EdgesegError, match="no encoder block named 'block_99'"):
        set_stage(model, 2, "block_99")


def test_top_block_is_the_stride_16_skip_block():
    from edgeseg.training.stages import top_block

    assert top_block("mobilenetv2_035") == "block_13"
    assert top_block("mobilenetv2_100") == "block_13"
    assert top_block("mobilenetv3_small") == "expanded_conv_8"
    assert top_block("mobilenetv3_large") == "expanded_conv_12"


def test_recalibrated_batchnorm_holds_the_exact_batch_mean():
    from edgeseg.tf_env import tf_keras
    from edgeseg.training.stages import recalibrate_batchnorm, set_stage

    _, keras = tf_keras()
    model = build()
    set_stage(model, 1)
    bn = model.get_layer("dec_bottom_bn")  # its input comes from the frozen encoder only
    probe = keras.Model(model.input, bn.input)
    batches = [random_batch(s)[0] for s in (1, 2)]
    inputs = [probe(x, training=False).numpy() for x in batches]  # 4 x 2 x 2 values a channel
    expected = np.mean([a.mean(axis=(0, 1, 2)) for a in inputs], axis=0)
    scale = np.mean([np.abs(a).mean(axis=(0, 1, 2)) for a in inputs], axis=0)
    frozen = model.get_layer("bn_Conv1").moving_mean.numpy().copy()
    assert recalibrate_batchnorm(model, batches) == 2
    # Each batch mean sums a channel's 16 values in float32, in the order of the batch-norm kernel
    # (oneDNN's depends on the CPU) or of numpy: within 16 * 2^-24 of their mean magnitude each,
    # and averaging two batches rounds up to 4 times more. The bound is relative to that scale
    # because the activations of this untrained model are ~1e-10: the last batch's mean instead
    # of the average of both is off by 9e-4 of the scale or more in every channel.
    np.testing.assert_array_less(np.abs(bn.moving_mean.numpy() - expected),
                                 (2 * 16 + 4) * 2.0**-24 * scale)
    np.testing.assert_array_equal(model.get_layer("bn_Conv1").moving_mean.numpy(), frozen)
    assert bn.momentum == 0.99


def test_evaluate_cli_matches_training_validation(tiny_run, tiny_data, tmp_path):
    result, run = tiny_run
    root, _, _ = tiny_data
    out = tmp_path / "scores.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeseg.cli", "evaluate", str(run), "--data", str(root), "--json", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "building" in proc.stdout and "mean" in proc.stdout
    scores = json.loads(out.read_text())
    # the run's validation images, tile and overlap, its classes: training's validation score
    assert scores["images"] == 2 and scores["tile"] == 64 and scores["overlap"] == 16
    assert scores["miou"] == pytest.approx(result.best_miou, abs=1e-6)
    assert set(scores["per_class"]) == set(synthetic.CLASSES)


def test_evaluate_a_folder_of_test_images_only(tiny_run, tiny_data, tmp_path):
    """A pattern that matches every file is fine for evaluation (training needs the rest)."""
    from edgeseg.evaluate import evaluate
    from firmware_bridge.io.classes import ClassTable

    result, run = tiny_run
    root, _, _ = tiny_data
    test = tmp_path / "test"
    for kind in ("images", "masks"):
        (test / kind).mkdir(parents=True)
        for f in (root / kind).glob("val_*"):
            (test / kind / f.name).symlink_to(f)
    table = ClassTable.load(root / "classes.csv")
    with pytest.raises(EdgesegError, match="nothing to train on"):
        load_split(str(test), table, "val_*")
    scores = evaluate(run, str(test), table, "val_*")
    assert scores.images == 2
    assert scores.scores.miou == pytest.approx(result.best_miou, abs=1e-6)


def test_encoder_and_decoder_from_a_previous_run_with_a_new_head(tiny_run):
    from edgeseg.models import decoder_layers, encoder_layers
    from edgeseg.training.runs import initial_model, load_run

    _, run = tiny_run
    old, _ = load_run(run, input_size=(96, 96))
    config = tiny_config(num_classes=3, class_names=["a", "b", "c"], encoder_weights=str(run))
    model, note = initial_model(config, (64, 64))
    assert "head_logits" in note
    for layer in encoder_layers(model)[::20] + decoder_layers(model):
        for a, b in zip(layer.get_weights(), old.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert model.output_shape[-1] == 3


def test_missing_imagenet_weights_say_how_to_supply_a_file(tmp_path, monkeypatch):
    from edgeseg.training.runs import initial_model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(EdgesegError, match="weights file"):
        initial_model(tiny_config(encoder_weights="imagenet"), (64, 64))
    with pytest.raises(EdgesegError, match="not a weights file"):
        initial_model(tiny_config(encoder_weights=str(tmp_path)), (64, 64))


@pytest.fixture
def shared_path_or_none():
    from conftest import shared_path

    path = shared_path() / WEIGHTS
    return str(path) if path.is_file() else None


def test_config_checks_and_round_trip():
    with pytest.raises(EdgesegError, match="class names"):
        TrainConfig(num_classes=3, class_names=["a"])
    with pytest.raises(EdgesegError, match="class_weighting"):
        TrainConfig(num_classes=2, class_weighting="sqrt")
    with pytest.raises(EdgesegError, match="colour_jitter must be >= 0"):
        TrainConfig(num_classes=2, colour_jitter=-0.5)
    with pytest.raises(EdgesegError, match="val_images"):
        tiny_config(val_images=-1)
    config = tiny_config(unfreeze="block_13")
    assert TrainConfig.from_dict({**config.__dict__, "unknown": 1}) == config


def test_spread_picks_evenly_from_first_to_last():
    nine = [f"tile7_{i}" for i in range(1, 10)]
    assert spread(nine, 4) == ["tile7_1", "tile7_4", "tile7_6", "tile7_9"]
    assert spread(nine, 3) == ["tile7_1", "tile7_5", "tile7_9"]
    assert spread(nine, 1) == ["tile7_5"]
    assert spread(nine, 0) == nine and spread(nine, None) == nine and spread(nine, 12) == nine


def test_validation_on_a_subset_scores_those_images(tiny_data, tmp_path):
    _, train_s, val_s = tiny_data
    result = train(tiny_config(stage1_epochs=1, stage2_epochs=0, val_images=1), train_s, val_s,
                   tmp_path / "sub", verbose=False)
    assert result.val_images == 1
    from edgeseg.spec import run_spec
    from edgeseg.training.runs import load_run
    from export.keras_backend import keras_segmenter
    from firmware_bridge.evaluate import score

    seg = keras_segmenter(load_run(tmp_path / "sub")[0], run_spec(tmp_path / "sub"))
    assert seg.tile == (64, 64) and seg.overlap == 16  # the run's own
    scores = score(seg, [(s.image, s.mask) for s in spread(val_s, 1)]).scores
    assert scores.miou == pytest.approx(result.best_miou, abs=1e-6)
    recorded = json.loads((tmp_path / "sub" / "scores.json").read_text())
    assert recorded["images"] == [s.stem for s in spread(val_s, 1)] and len(val_s) > 1


def test_time_budget_is_kept_on_a_fake_clock(tiny_data, tmp_path, monkeypatch):
    """Each training step costs 10 s and each validation 15 s of a fake clock: the run stops
    inside the budget, leaving the time of one validation, and the learning rate of stage 2 has
    decayed to its floor when the budget ends it."""
    import edgeseg.training.loop as epoch_loop

    now = [0.0]
    monkeypatch.setattr(epoch_loop, "clock", lambda: now[0])
    real_score, real_enter = epoch_loop.score, epoch_loop.TrainingLoop._enter_stage

    def evaluate(*args, **kw):
        now[0] += 15.0
        return real_score(*args, **kw)

    def enter(self, stage):
        real_enter(self, stage)
        step = self.step

        def timed_step(images, masks):
            now[0] += 10.0
            return step(images, masks)

        self.step = timed_step

    monkeypatch.setattr(epoch_loop, "score", evaluate)
    monkeypatch.setattr(epoch_loop.TrainingLoop, "_enter_stage", enter)
    config = tiny_config(stage1_epochs=2, stage2_epochs=20, steps_per_epoch=5, time_budget_s=320.0)
    result = train(config, tiny_data[1], tiny_data[2], tmp_path / "run", verbose=False)
    rows = result.history
    # epochs of 5 steps + validation = 65 s; after the fourth (260 s) the reserve is
    # 1.25 * 15 + 10 = 28.75 s, so the fifth trains until 291.25 s: 4 steps, then validates
    assert result.stopped == "time budget"
    assert [r["steps"] for r in rows] == [5, 5, 5, 5, 4]
    assert [r["elapsed_s"] for r in rows] == [65.0, 130.0, 195.0, 260.0, 315.0]
    assert [r["slowest_step_s"] for r in rows] == [10.0] * 5
    assert rows[1]["stage"] == 1 and rows[2]["stage"] == 2
    assert rows[-1]["lr_head"] == pytest.approx(config.lr_head * 0.02, rel=0.05)


def _fake_clock(monkeypatch, scores=None):
    """Steps cost 10 s and validations 15 s of a fake clock; ``scores`` replaces the val mIoUs."""
    import edgeseg.training.loop as epoch_loop

    now, seen = [0.0], []
    monkeypatch.setattr(epoch_loop, "clock", lambda: now[0])
    real_score, real_enter = epoch_loop.score, epoch_loop.TrainingLoop._enter_stage

    def evaluate(*args, **kw):
        now[0] += 15.0
        result = real_score(*args, **kw)
        if scores is not None:
            result.scores.miou = scores[len(seen)]
        seen.append(result.scores.miou)
        return result

    def enter(self, stage):
        real_enter(self, stage)
        step = self.step

        def timed_step(images, masks):
            now[0] += 10.0
            return step(images, masks)

        self.step = timed_step

    monkeypatch.setattr(epoch_loop, "score", evaluate)
    monkeypatch.setattr(epoch_loop.TrainingLoop, "_enter_stage", enter)


def test_default_schedule_spans_the_whole_budget(tiny_data, tmp_path, monkeypatch):
    """With a budget and no epoch cap the run trains until the budget is spent, whatever the
    validation scores do (no early stop), and the cosine decay reaches its floor at the end."""
    _fake_clock(monkeypatch, scores=[0.9] + [0.1] * 40)  # never better after the first epoch
    config = tiny_config(stage1_epochs=1, stage2_epochs=None, steps_per_epoch=5, patience=1,
                         time_budget_s=1000.0)
    result = train(config, tiny_data[1], tiny_data[2], tmp_path / "run", verbose=False)
    rows = result.history
    assert result.stopped == "time budget"
    assert len(rows) >= 14  # 65 s per epoch: 15 epochs fit in 1000 s, the old cap was 1 + 4
    assert 1000.0 - 65.0 <= rows[-1]["elapsed_s"] <= 1000.0
    lrs = [r["lr_head"] for r in rows if r["stage"] == 2]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > 0.8 * config.lr_head
    assert lrs[-1] <= 0.03 * config.lr_head  # the floor is 0.02
    assert result.best_epoch == 1


def test_without_budget_or_cap_training_stops_when_validation_stops_improving(
        tiny_data, tmp_path, monkeypatch):
    """No budget, no epoch cap: the rate halves after each epoch without a better score and
    ``patience`` such epochs in a row end the run."""
    _fake_clock(monkeypatch, scores=[0.2, 0.3, 0.25, 0.4, 0.35, 0.33, 0.3, 0.1, 0.1])
    config = tiny_config(stage1_epochs=1, stage2_epochs=None, steps_per_epoch=2, patience=3)
    result = train(config, tiny_data[1], tiny_data[2], tmp_path / "run", verbose=False)
    rows = result.history
    assert result.stopped == "early stopping"
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert result.best_epoch == 4
    # the rate each epoch trained at: halved after epochs 3, 5, 6 (no better score)
    factors = [r["lr_head"] / config.lr_head for r in rows[1:]]
    assert factors == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.125])
    with pytest.raises(EdgesegError, match="needs an end"):
        train(config, tiny_data[1], [], tmp_path / "run2", verbose=False)
