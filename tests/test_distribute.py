"""Training under tf.distribute: TF_CONFIG checks, sharded crops, mirrored and multi-worker runs.

The multi-worker test starts two real ``edgeseg train --strategy multiworker`` processes on
localhost (CPU, a tiny model, a stage-1 and a stage-2 step) and checks them against one process
on the same global batches. Adam moves every weight by about its learning rate on its first
steps whatever the gradient's size, so a gradient that float rounding leaves near zero can
step either way: after Adam steps the weights agree to that bound, and the exact check of the
averaged gradients is the two-replica SGD step (``tests/scripts/two_replica_step.py``).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseg.data import load_split, synthetic
from edgeseg.data.pipeline import CropSampler
from edgeseg.training.distribute import read_tf_config
from edgeseg.training.train import TrainConfig, train
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable

GOOD = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}


def test_tf_config_places_the_task():
    task = read_tf_config(json.dumps(GOOD))
    assert (task.task_type, task.task_index, task.num_workers, task.chief) == ("worker", 1, 2, False)
    assert read_tf_config(json.dumps({**GOOD, "task": {"type": "worker", "index": 0}})).chief
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}
    task = read_tf_config(json.dumps(with_chief))
    assert not task.chief and task.num_workers == 2
    assert read_tf_config(json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})).chief


@pytest.mark.parametrize("text, says", [
    (None, "needs the TF_CONFIG environment variable"),
    ("  ", "needs the TF_CONFIG environment variable"),
    ("{cluster", "TF_CONFIG is not JSON"),
    ("[]", 'needs a "cluster" object and a "task" object'),
    (json.dumps({"cluster": GOOD["cluster"]}), 'needs a "cluster" object and a "task" object'),
    (json.dumps({**GOOD, "cluster": {"worker": ["a:1"], "ps": ["b:2"]}}), "has ps tasks"),
    (json.dumps({**GOOD, "cluster": {"worker": []}}), "non-empty list"),
    (json.dumps({**GOOD, "cluster": {"worker": ["localhost"]}}), "is not host:port"),
    (json.dumps({**GOOD, "cluster": {"worker": ["a:1"], "chief": ["b:1", "c:1"]}}), "more than one chief"),
    (json.dumps({**GOOD, "task": {"type": "chief", "index": 0}}), "task type 'chief' is not in the cluster"),
    (json.dumps({**GOOD, "task": {"type": "worker", "index": 2}}), "index 2 is out of range"),
    (json.dumps({**GOOD, "task": {"type": "worker", "index": "1"}}), "out of range"),
])
def test_bad_tf_config_is_a_one_line_error(text, says):
    with pytest.raises(EdgesegError, match=says) as info:
        read_tf_config(text)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    synthetic.write_dataset(root, 3, (96, 128), seed=0, prefix="train")
    synthetic.write_dataset(root, 1, (80, 100), seed=10, prefix="val")
    table = ClassTable.load(root / "classes.csv")
    train_s, val_s = load_split(str(root), table, "val_*")
    return root, train_s, val_s


def test_shards_of_each_global_batch_make_the_whole_batch(scenes):
    _, train_s, _ = scenes
    sampler = CropSampler(train_s, 5, 32, balance=0.5)
    whole = [(x.numpy(), y.numpy()) for x, y in sampler.dataset(3, 1, steps=3, batch=4)]
    shards = [[(x.numpy(), y.numpy()) for x, y in sampler.dataset(3, 1, 3, 4, shard=(i, 2))]
              for i in range(2)]
    assert len(whole) == 3 and all(len(s) == 3 for s in shards)
    for step, (x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[step][0] for s in shards]), x)
        np.testing.assert_array_equal(np.concatenate([s[step][1] for s in shards]), y)
    # one pipeline feeding two replicas: per-replica batches in replica order
    halves = [x.numpy() for x, _ in sampler.dataset(3, 1, 3, 4, replica_batch=2)]
    np.testing.assert_array_equal(np.concatenate(halves[:2]), whole[0][0])


def small_config(**kw):
    base = dict(num_classes=5, class_names=synthetic.CLASSES, crop=64, batch=4, stage1_epochs=1,
                stage2_epochs=1, steps_per_epoch=1, lr_head=3e-3, val_tile=64,
                val_pattern="val_*", val_images=1, encoder_weights=None, seed=7, loss="ce")
    base.update(kw)
    return TrainConfig(**base)


def checkpoint_weights(run: Path) -> dict[str, np.ndarray]:
    """The model variables of a run's last checkpoint, by checkpoint key."""
    import tensorflow as tf

    prefix = json.loads((run / "state.json").read_text())["checkpoint"]
    reader = tf.train.load_checkpoint(prefix)
    keys = [k for k in reader.get_variable_to_shape_map()
            if k.startswith("model/") and k.endswith("VARIABLE_VALUE")]
    return {k: reader.get_tensor(k) for k in keys}


def assert_same_weights(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a.keys() == b.keys() and len(a) > 50
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def start_run(scenes, tmp_path_factory):
    """A trained run whose encoder and decoder the comparisons start from (transfer learning)."""
    _, train_s, val_s = scenes
    run = tmp_path_factory.mktemp("start") / "run"
    train(small_config(steps_per_epoch=4), train_s, val_s, run, verbose=False)
    return run


@pytest.fixture(scope="module")
def single_run(scenes, start_run, tmp_path_factory):
    _, train_s, val_s = scenes
    run = tmp_path_factory.mktemp("single") / "run"
    train(small_config(encoder_weights=str(start_run)), train_s, val_s, run, verbose=False)
    return run


def test_mirrored_on_one_device_trains_the_default_weights(scenes, start_run, single_run, tmp_path):
    _, train_s, val_s = scenes
    run = tmp_path / "mirrored"
    result = train(small_config(encoder_weights=str(start_run)), train_s, val_s, run,
                   verbose=False, strategy="mirrored")
    assert result.epochs == 2 and result.chief
    # One replica adds no arithmetic (the loss divided by 1, an all-reduce of one value, batch-norm
    # left fused): the same kernels see the same values, and the weights come out the same to the
    # last place. Any rounding difference would not stay small: Adam turns a near-zero gradient's
    # rounding into a step of up to the learning rate (the multi-worker bound below).
    assert_same_weights(checkpoint_weights(run), checkpoint_weights(single_run), 1e-5, 1e-6)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cli_args(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "edgeseg.cli", "train", "--data", str(root), "--classes",
            str(root / "classes.csv"), "--out", str(out), "--crop", "64", "--batch", "4",
            "--stage1-epochs", "1", "--stage2-epochs", "1", "--steps-per-epoch", "1", "--lr", "3e-3",
            "--val-tile", "64", "--val-images", "1", "--val-pattern", "val_*", "--seed", "7",
            "--loss", "ce", "--quiet"]


def test_two_workers_train_the_single_process_weights(scenes, start_run, single_run, tmp_path):
    root, _, _ = scenes
    out = tmp_path / "run"  # one folder both workers see, as on a shared file system
    addresses = [f"localhost:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = {**os.environ, "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                        "task": {"type": "worker", "index": index}})}
        cmd = [*cli_args(root, out), "--strategy", "multiworker", "--encoder-weights", str(start_run)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outputs.append(stdout)
        assert p.returncode == 0, stderr[-3000:]
    digests = [[line.rsplit(" ", 1)[1] for line in o.splitlines() if "weights sha256" in line]
               for o in outputs]
    assert digests[0] and digests[0] == digests[1], outputs
    assert "global batch 4 = 2 per replica" in outputs[0]
    assert "the chief wrote the run" in outputs[1]
    # only the chief wrote: the run folder holds what a single process writes, nothing else
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single_run.iterdir())
    assert len(list((out / "checkpoints").iterdir())) == len(list((single_run / "checkpoints").iterdir()))
    assert not list((tmp_path / "tmp1").iterdir()) and not list((tmp_path / "tmp0").iterdir())
    # the same global batch, batch-norm statistics over both workers: the same first loss up to
    # rounding. It is a mean over 4 * 64 * 64 = 16384 pixel terms, summed as two workers' means
    # in place of one: rounding errors of random sign, sqrt(16384) * 2^-24 = 7.6e-6 of the loss
    # each way, 1.5e-5 between the two, and history.csv's 6 decimals add up to 1e-6. The
    # synchronised statistics (E[x^2] - E[x]^2, with mean^2 / var below 6 in these layers)
    # rescale a channel by ~1e-5 at most, which the loss feels by a fraction of that.
    # Statistics left unsynchronised (each worker's 2 crops alone) move it by 1.5e-2.
    losses = [[float(line.split(",")[3]) for line in (run / "history.csv").read_text().splitlines()[1:]]
              for run in (out, single_run)]
    assert len(losses[0]) == 2
    assert abs(losses[0][0] - losses[1][0]) <= 2 * 128 * 2.0**-24 * losses[1][0] + 1e-6, losses
    # after one Adam step per stage every weight is within Adam's step bound of the single run's
    a, b = checkpoint_weights(out), checkpoint_weights(single_run)
    assert a.keys() == b.keys()
    steps, lr = 2, 3e-3
    for k in a:
        if "moving" not in k:
            assert np.abs(a[k] - b[k]).max() <= 2 * steps * lr + 1e-5, k


# Tolerances for the two-replica step, from the arithmetic rather than from one CPU. In float32
# the two paths differ by rounding alone, but that rounding is amplified: synchronised batch-norm
# takes each channel's variance as E[x^2] - E[x]^2 over the replicas' sums, whose relative error
# is about log2(n) * 2^-24 * (mean^2 + var) / var, and after two SGD steps some decoder channels
# have mean^2 / var in the hundreds, so the third loss moves by ~1e-4 on one CPU's reduction
# order and by other amounts on another's. The layers therefore run in float64 (unit roundoff
# 2^-53 ~ 1.1e-16, the same amplification leaves ~1e-12); only the head's softmax and the
# loss stay float32 and see the same inputs to that precision. Any error in the algorithm (a
# replica's gradient left out or counted twice, batch statistics not synchronised) moves the
# loss by 1e-3 or more and the weights by more than 1e-2 of their update.
LOSS_RTOL = 8 * 2.0 ** -24  # a few float32 roundings of the same loss: ~5e-7
# Relative distance of the weights after 3 steps: SGD is linear in the gradient, ~1e-13 at most;
# Adam divides by sqrt(v) + 1e-7, so a gradient near zero turns its 1e-16 error into 1e-9 of
# the step at most.
DISTANCE = {"sgd": 1e-10, "adam": 1e-8}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_replicas_average_the_gradients_of_one_batch(optimizer):
    """Two CPU replicas, half the batch each, synchronised batch-norm: the one-device steps."""
    script = Path(__file__).parent / "scripts" / "two_replica_step.py"
    r = subprocess.run([sys.executable, str(script), optimizer, "3", "float64"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["loss_mirrored"], out["loss_default"], rtol=LOSS_RTOL)
    assert out["distance"] < DISTANCE[optimizer]


def test_bad_tf_config_on_the_command_line(scenes, tmp_path):
    root, _, _ = scenes
    env = {**os.environ, "TF_CONFIG": '{"cluster": {"worker": ["localhost"]}, "task": {}}'}
    r = subprocess.run([*cli_args(root, tmp_path / "run"), "--strategy", "multiworker"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "is not host:port" in r.stderr
    assert not (tmp_path / "run").exists()
