"""An exponential moving average of a model's trainable weights, validated and saved instead of them.

After step ``n`` (counted from 1) every averaged weight ``a`` of a weight ``w`` becomes::

    d = min(decay, (1 + n) / (10 + n))
    a = d * a + (1 - d) * w

(the warm-up of ``tf.train.ExponentialMovingAverage`` with ``num_updates``: early averages
forget the random start quickly). Averaging the last few hundred steps smooths the step-to-step
noise of small-batch training, so the validated model moves less between epochs and the
best-epoch choice picks less noise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from edgeseg.tf_env import tf_keras


def ema_decay(decay: float, step: int) -> float:
    """The decay used at update ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """Averaged copies of ``variables``, updated by :meth:`update` after each optimizer step.

    Create it where the variables were created (a ``tf.distribute`` strategy's scope for
    distributed ones); :meth:`update` runs in a ``tf.function`` or eagerly, outside
    ``strategy.run`` (every replica holds the same weights after a step).

    Args:
        variables: The trainable variables to average.
        decay: Decay per step, in ``(0, 1)``.
    """

    def __init__(self, variables: Sequence, decay: float) -> None:

        tf, _ = tf_keras()
        self.variables, self.decay = list(variables), float(decay)
        self.shadow = [tf.Variable(v.read_value(), trainable=False, name="average") for v in self.variables]
        self.steps = tf.Variable(0.0, trainable=False, name="average_steps")

    def update(self) -> None:
        """One averaging step (the formula in the module docstring)."""
        tf, _ = tf_keras()
        n = self.steps.assign_add(1.0)
        d = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
        for a, w in zip(self.shadow, self.variables, strict=True):
            a.assign(d * a + (1.0 - d) * tf.cast(w, a.dtype))

    def reset(self) -> None:
        """Restart the average at the current weights."""
        for a, w in zip(self.shadow, self.variables, strict=True):
            a.assign(w.read_value())
        self.steps.assign(0.0)

    def trackables(self) -> list:
        """The averaged variables and the step count, for a ``tf.train.Checkpoint``."""
        return [*self.shadow, self.steps]

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the model inside the block, its own weights back after it."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def _swap(self) -> None:
        for a, w in zip(self.shadow, self.variables, strict=True):
            own = w.read_value()
            w.assign(a.read_value())
            a.assign(own)
