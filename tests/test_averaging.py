"""The moving average of the weights: the formula, the swap, and its use in a train step."""

import numpy as np
import pytest

from edgeseg.tf_env import tf_keras
from edgeseg.training.averaging import WeightAverage, ema_decay

tf, keras = tf_keras()


def toy_model():
    inp = keras.Input((3,))
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.Dense(4, activation="relu")(inp)))


def test_average_follows_the_formula_step_by_step():
    model = toy_model()
    rng = np.random.default_rng(0)
    average = WeightAverage(model.trainable_weights, decay=0.9)
    expected = [w.numpy().copy() for w in model.trainable_weights]
    for n in range(1, 30):
        for w in model.trainable_weights:
            w.assign(rng.normal(size=w.shape).astype(np.float32))
        average.update()
        d = min(0.9, (1 + n) / (10 + n))
        weights = model.trainable_weights
        expected = [d * a + (1 - d) * w.numpy() for a, w in zip(expected, weights, strict=True)]
        for got, want in zip(average.shadow, expected, strict=True):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    assert ema_decay(0.9, 1) == pytest.approx(2 / 11) and ema_decay(0.9, 1000) == 0.9


def test_swap_puts_the_average_in_the_model_and_takes_it_out():
    model = toy_model()
    own = [w.numpy().copy() for w in model.trainable_weights]
    average = WeightAverage(model.trainable_weights, decay=0.5)
    for a in average.shadow:
        a.assign(tf.ones_like(a))
    x = np.ones((1, 3), np.float32)
    before = model(x).numpy()
    with average.swapped():
        assert all(np.all(w.numpy() == 1) for w in model.trainable_weights)
        assert not np.allclose(model(x).numpy(), before)
    for w, o in zip(model.trainable_weights, own, strict=True):
        np.testing.assert_array_equal(w.numpy(), o)
    average.reset()
    for a, o in zip(average.shadow, own, strict=True):
        np.testing.assert_array_equal(a.numpy(), o)


def test_train_step_updates_the_average_after_the_optimizer():
    from edgeseg.training.stages import make_train_step

    model = toy_model()
    variables = model.trainable_weights
    opt = keras.optimizers.SGD(0.1)
    opt.build(variables)
    average = WeightAverage(variables, decay=0.99)
    start = [w.numpy().copy() for w in variables]

    def loss_fn(y, p):
        return tf.reduce_mean(tf.square(p - tf.cast(y, p.dtype)))

    step = make_train_step(model, loss_fn, [], variables, None, opt, average=average)
    step(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
    d = ema_decay(0.99, 1)
    for a, s, w in zip(average.shadow, start, variables, strict=True):
        assert not np.allclose(w.numpy(), s)  # the step moved the weights
        np.testing.assert_allclose(a.numpy(), d * s + (1 - d) * w.numpy(), rtol=1e-5, atol=1e-7)
