import math

import numpy as np
import pytest

from edgeseg.training.losses import (
    cross_entropy_loss,
    dice_loss,
    focal_loss,
    get_loss,
    parse_loss_spec,
    soft_dice_per_class,
)
from firmware_bridge.errors import EdgesegError


def literature_example():
    """8 target pixels of class 1; p(class 1) sums to 7.41 on them and 7.82 overall."""
    y_true = np.array([1] * 8 + [0] * 8, np.uint8).reshape(1, 4, 4)
    p1 = np.array([0.93] * 7 + [0.90] + [0.05] * 7 + [0.06], np.float32).reshape(1, 4, 4)
    assert math.isclose(p1[y_true == 1].sum(), 7.41, rel_tol=1e-6)
    assert math.isclose(p1.sum(), 7.82, rel_tol=1e-6)
    return y_true, p1


def softmax2(p1):
    return np.stack([1.0 - p1, p1], axis=-1)


def test_soft_dice_literature_example_softmax():
    y_true, p1 = literature_example()
    dice, present = soft_dice_per_class(y_true, softmax2(p1))
    assert dice.numpy()[1] == pytest.approx(2 * 7.41 / (7.82 + 8), rel=1e-5)
    # Class 0: prediction sum 16 - 7.82, intersection 8 - 0.41.
    assert dice.numpy()[0] == pytest.approx(2 * 7.59 / (8.18 + 8), rel=1e-5)
    np.testing.assert_array_equal(present.numpy(), [1.0, 1.0])
    expected = 1 - (2 * 7.41 / 15.82 + 2 * 7.59 / 16.18) / 2
    assert float(dice_loss()(y_true, softmax2(p1))) == pytest.approx(expected, rel=1e-5)


def test_soft_dice_literature_example_sigmoid_is_foreground_dice():
    y_true, p1 = literature_example()
    for pred in (p1[..., None], p1):  # (N,H,W,1) and Keras's squeezed (N,H,W)
        loss = float(dice_loss()(y_true, pred))
        assert loss == pytest.approx(1 - 2 * 7.41 / (7.82 + 8), rel=1e-5)


def test_weighted_dice_mean_skips_absent_classes():
    y_true, p1 = literature_example()
    probs = np.concatenate([softmax2(p1) * 0.9, np.full(p1.shape + (1,), 0.1, np.float32)], -1)
    dice, present = soft_dice_per_class(y_true, probs)
    d = dice.numpy()
    assert d[1] == pytest.approx(2 * 0.9 * 7.41 / (0.9 * 7.82 + 8), rel=1e-5)
    np.testing.assert_array_equal(present.numpy(), [1.0, 1.0, 0.0])
    loss = float(dice_loss(class_weights=[1.0, 3.0, 5.0])(y_true, probs))
    assert loss == pytest.approx((1 * (1 - d[0]) + 3 * (1 - d[1])) / 4, rel=1e-5)


def ce_example():
    y_true = np.array([[[0, 1, 255]]], np.uint8)
    y_pred = np.array([[[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]]]], np.float32)
    return y_true, y_pred


def test_weighted_cross_entropy_hand_value():
    y_true, y_pred = ce_example()
    expected = (1 * -math.log(0.7) + 2 * -math.log(0.6)) / (1 + 2)
    loss = float(cross_entropy_loss([1.0, 2.0, 3.0])(y_true, y_pred))
    assert loss == pytest.approx(expected, rel=1e-6)
    unweighted = float(cross_entropy_loss()(y_true, y_pred))
    assert unweighted == pytest.approx((-math.log(0.7) - math.log(0.6)) / 2, rel=1e-6)


def test_focal_hand_value_and_gamma_zero_is_ce():
    y_true, y_pred = ce_example()
    w = [1.0, 2.0, 3.0]
    expected = (1 * 0.3**2 * -math.log(0.7) + 2 * 0.4**2 * -math.log(0.6)) / 3
    assert float(focal_loss(w, gamma=2.0)(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)
    assert float(focal_loss(w, gamma=0.0)(y_true, y_pred)) == pytest.approx(
        float(cross_entropy_loss(w)(y_true, y_pred)), rel=1e-7
    )


def test_binary_cross_entropy_on_sigmoid_output():
    y_true = np.array([[[1, 0, 255]]], np.uint8)
    p = np.array([[[[0.8], [0.3], [0.99]]]], np.float32)
    expected = (-math.log(0.8) - math.log(0.7)) / 2
    assert float(get_loss("ce", 1)(y_true, p)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("spec", ["ce", "dice", "focal", "ce+dice", "0.5*focal+dice"])
def test_ignored_pixels_change_nothing(spec):
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, (2, 6, 6)).astype(np.uint8)
    y_pred = rng.dirichlet([1, 1, 1], (2, 6, 6)).astype(np.float32)
    loss = get_loss(spec, 3, class_weights=[0.5, 1.0, 2.0])
    base = float(loss(y_true, y_pred))
    # Append ignored columns with confident, wrong predictions.
    y_true2 = np.concatenate([y_true, np.full((2, 6, 3), 255, np.uint8)], axis=2)
    junk = np.zeros((2, 6, 3, 3), np.float32)
    junk[..., 2] = 1.0
    y_pred2 = np.concatenate([y_pred, junk], axis=2)
    assert float(loss(y_true2, y_pred2)) == pytest.approx(base, rel=1e-6)
    assert float(loss(y_true2[..., None], y_pred2)) == pytest.approx(base, rel=1e-6)


def test_all_ignored_gives_zero():
    y_true = np.full((1, 2, 2), 255, np.uint8)
    y_pred = np.full((1, 2, 2, 2), 0.5, np.float32)
    assert float(get_loss("ce+dice+focal", 2)(y_true, y_pred)) == 0.0


def test_weighted_sum_matches_terms():
    y_true, y_pred = ce_example()
    w = [1.0, 2.0, 3.0]
    total = float(get_loss("0.5*focal+dice", 3, w)(y_true, y_pred))
    expected = 0.5 * float(focal_loss(w)(y_true, y_pred)) + float(dice_loss(w)(y_true, y_pred))
    assert total == pytest.approx(expected, rel=1e-6)
    assert get_loss("0.5*focal+dice", 3).spec == "0.5*focal+dice"


def test_parse_and_errors():
    assert parse_loss_spec("CE + 2*dice") == [(1.0, "ce"), (2.0, "dice")]
    with pytest.raises(EdgesegError, match="valid losses: ce, dice, focal"):
        get_loss("ce+lovasz", 3)
    with pytest.raises(EdgesegError, match="cannot parse"):
        get_loss("ce++dice", 3)
    with pytest.raises(EdgesegError, match="expected 3"):
        get_loss("ce", 3, class_weights=[1.0, 2.0])


def test_gradient_is_finite_through_keras_model():
    from edgeseg.tf_env import tf_keras

    tf, keras = tf_keras()
    y_true = np.array([[[0, 1], [255, 1]]], np.uint8)
    logits = tf.Variable(np.zeros((1, 2, 2, 2), np.float32))
    loss_fn = get_loss("ce+dice+focal", 2, class_weights=[1.0, 4.0])
    with tf.GradientTape() as tape:
        loss = loss_fn(y_true, tf.nn.softmax(logits))
    grad = tape.gradient(loss, logits).numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[0, 1, 0], [0.0, 0.0])  # the ignored pixel
    assert np.abs(grad[0, 0, 0]).sum() > 0
