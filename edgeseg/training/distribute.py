"""Training on several devices or machines with ``tf.distribute``.

``edgeseg train --strategy`` picks one of:

* ``default``: one process, one device (no strategy object in the way).
* ``mirrored``: :class:`tf.distribute.MirroredStrategy`, every GPU of this machine (the CPU
  when there is none), one replica each.
* ``multiworker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, several processes or
  machines described by the ``TF_CONFIG`` environment variable (what Kubernetes operators,
  SLURM scripts and Ray Train set), collective all-reduce between them.

``--batch`` is the global batch: each replica gets ``batch / replicas`` crops. The loss of a
replica is divided by the replica count and the optimizers sum the gradients over replicas, so
a step is the same step as one process taking the whole batch. Batch-norm layers that train
compute their statistics over the global batch (synchronised batch-norm) when there is more
than one replica. The chief (task ``chief``, or ``worker`` 0 when there is no chief) validates
and writes the run folder; its decisions (learning rate, stop, next epoch) reach every worker
through a collective, so all workers take the same number of steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError

STRATEGIES = ("default", "mirrored", "multiworker")
"""The names ``--strategy`` takes."""

TASK_TYPES = ("chief", "worker")


@dataclass(frozen=True)
class ClusterTask:
    """A process's place in a ``TF_CONFIG`` cluster.

    Attributes:
        task_type: ``"chief"`` or ``"worker"``.
        task_index: Index among the tasks of that type.
        num_workers: Chief plus workers.
        chief: Whether this task writes the run folder.
    """

    task_type: str
    task_index: int
    num_workers: int
    chief: bool


def read_tf_config(text: str | None) -> ClusterTask:
    """Check a ``TF_CONFIG`` value for multi-worker training and say where this task stands.

    Args:
        text: The variable's value (``None`` when it is not set).

    Returns:
        This task.

    Raises:
        EdgesegError: One line naming what is wrong: not set, not JSON, no ``cluster`` or
            ``task``, task types other than chief/worker, more than one chief, an address
            that is not ``host:port``, or a task that is not in the cluster.
    """
    hint = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\'')
    if not text or not text.strip():
        raise EdgesegError(f"--strategy multiworker needs the TF_CONFIG environment variable, e.g. {hint}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgesegError(f"TF_CONFIG is not JSON ({exc.msg} at character {exc.pos}); e.g. {hint}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
            or not isinstance(config.get("task"), dict):
        raise EdgesegError(f'TF_CONFIG needs a "cluster" object and a "task" object, e.g. {hint}')
    cluster, task = config["cluster"], config["task"]
    other = sorted(set(cluster) - set(TASK_TYPES))
    if other:
        raise EdgesegError(f"TF_CONFIG cluster has {', '.join(other)} tasks; multi-worker training "
                           "takes only 'chief' and 'worker' tasks")
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise EdgesegError(f"TF_CONFIG cluster {kind!r} must be a non-empty list of host:port")
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise EdgesegError(f"TF_CONFIG cluster {kind!r} address {address!r} is not host:port")
    if len(cluster.get("chief", [])) > 1:
        raise EdgesegError("TF_CONFIG cluster has more than one chief")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        raise EdgesegError(f"TF_CONFIG task type {kind!r} is not in the cluster "
                           f"({', '.join(sorted(cluster))})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise EdgesegError(f"TF_CONFIG task index {index!r} is out of range: the cluster has "
                           f"{len(cluster[kind])} {kind} task(s), indexed from 0")
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    workers = sum(len(v) for v in cluster.values())
    return ClusterTask(kind, index, workers, chief)


@dataclass
class Replicas:
    """A strategy and what the training loop needs to know about it.

    Attributes:
        name: One of :data:`STRATEGIES`.
        strategy: The ``tf.distribute.Strategy`` (the default strategy for ``"default"``).
        num_replicas: Replicas in sync (all workers).
        num_workers: Processes taking part.
        chief: Whether this process validates and writes the run folder.
        task: ``"worker 1 of 2"`` style label for messages.
    """

    name: str
    strategy: object
    num_replicas: int = 1
    num_workers: int = 1
    chief: bool = True
    task: str = "single process"
    _broadcast: object = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        """Whether a strategy other than the default one is in use."""
        return self.name != "default"

    def per_replica_batch(self, global_batch: int) -> int:
        """Crops per replica and step.

        Raises:
            EdgesegError: When the global batch does not split evenly over the replicas.
        """
        if global_batch % self.num_replicas:
            raise EdgesegError(
                f"--batch {global_batch} does not split over {self.num_replicas} replicas: "
                f"use a multiple of {self.num_replicas} (it is the global batch)")
        return global_batch // self.num_replicas

    def scope(self):
        """The strategy's scope (nothing for the default strategy)."""
        return self.strategy.scope() if self.distributed else contextlib.nullcontext()

    def from_chief(self, values: list[float]) -> list[float]:
        """The chief's ``values`` on every worker (a collective; every worker must call it).

        With one worker the values come back as they are.
        """
        if self.num_workers == 1:
            return [float(v) for v in values]
        if self._broadcast is None:
            self._broadcast = _make_broadcast(self.strategy)
        x = np.asarray(values, np.float64)
        out = self._broadcast(x if self.chief else np.zeros_like(x))
        return [float(v) for v in np.asarray(out)]


def _make_broadcast(strategy):
    """A compiled all-reduce in which only replica 0 (on the chief) contributes."""
    tf, _ = tf_keras()

    def replica_fn(x):
        ctx = tf.distribute.get_replica_context()
        keep = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), x.dtype)
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x * keep)

    @tf.function(autograph=False)
    def broadcast(x):
        return strategy.experimental_local_results(strategy.run(replica_fn, args=(x,)))[0]

    return broadcast


def make_replicas(name: str) -> Replicas:
    """Create the strategy called ``name`` (call it before TensorFlow runs anything else).

    Raises:
        EdgesegError: For an unknown name, a bad ``TF_CONFIG`` (``multiworker``), or a cluster
            that fails to start.
    """
    if name not in STRATEGIES:
        raise EdgesegError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    tf, _ = tf_keras()
    if name == "default":
        return Replicas(name, tf.distribute.get_strategy())
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        n = strategy.num_replicas_in_sync
        return Replicas(name, strategy, n, 1, True, f"{n} replica(s) on this machine")
    task = read_tf_config(os.environ.get("TF_CONFIG"))
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise EdgesegError(f"multi-worker training could not start from TF_CONFIG: "
                           f"{str(exc).splitlines()[0]}") from exc
    label = f"{task.task_type} {task.task_index} of {task.num_workers} workers"
    return Replicas(name, strategy, strategy.num_replicas_in_sync, task.num_workers, task.chief,
                    label)


def place_model(replicas: Replicas, template):
    """The training model under the strategy: a copy of ``template`` with its weights.

    Building the weights outside the strategy first keeps a seeded run's initial weights the
    same whatever the strategy. With more than one replica, batch-norm layers compute their
    training statistics over the global batch (:func:`synchronise_batchnorm`).

    Returns:
        ``(model, host)``: the model to train, and a model outside the strategy that
        :func:`host_copy` fills (``template`` itself; both are ``template`` without a strategy).
    """
    if not replicas.distributed:
        return template, template
    _, keras = tf_keras()
    with replicas.scope():
        model = keras.models.clone_model(template)
        model.set_weights(template.get_weights())
    if replicas.num_replicas > 1:
        synchronise_batchnorm(model, True)
    return model, template


def host_copy(model, host):
    """``host`` with the weights of ``model``, read once (a collective: every worker calls it).

    Reading a strategy's batch-norm statistics aggregates them over the replicas, so the
    workers must read the same variables in the same order; the chief then copies from
    ``host`` alone.
    """
    if host is not model:
        host.set_weights(model.get_weights())
    return host


def batchnorm_layers(model) -> list:
    """The model's ``BatchNormalization`` layers."""
    _, keras = tf_keras()
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def synchronise_batchnorm(model, on: bool) -> None:
    """Switch the model's batch-norm layers between global-batch and local statistics.

    ``on``: the (unfused) synchronised form, whose statistics are summed over the replicas in
    a training step; off: the fused local form the layers were built with. Train steps trace
    the form in effect when they first run.
    """
    for layer in batchnorm_layers(model):
        layer.synchronized, layer.fused = on, not on


@contextlib.contextmanager
def local_batchnorm(model, replicas: Replicas):
    """Batch-norm in its local form for the duration (re-estimating statistics on every worker)."""
    synced = replicas.num_replicas > 1 and replicas.distributed
    if synced:
        synchronise_batchnorm(model, False)
    try:
        yield
    finally:
        if synced:
            synchronise_batchnorm(model, True)


def weights_digest(model) -> str:
    """A short SHA-256 of every weight of ``model``: equal on every worker of a run."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


class ScratchDir:
    """Where a non-chief worker writes what every worker must write (checkpoints); deleted at close."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="edgeseg-worker-")

    def close(self) -> None:
        """Delete the folder."""
        shutil.rmtree(self.path, ignore_errors=True)
