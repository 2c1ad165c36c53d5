import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from firmware_bridge.metrics import ConfusionMatrix, confusion_matrix


def test_confusion_matrix_by_hand():
    t = np.array([[0, 0, 1], [1, 1, 2], [2, 2, 255]])
    p = np.array([[0, 1, 1], [1, 2, 2], [2, 0, 0]])
    m = confusion_matrix(t, p, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 2]]


def test_iou_one_third_3x3():
    # class 1: truth 3 pixels, prediction 3 pixels, overlap 1 -> TP 1, FP 2, FN 2 -> IoU 1/5
    # class 0: truth 6, prediction 6, overlap 4 -> IoU 4 / 8 = 1/2
    t = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    p = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    s = ConfusionMatrix(2).update(t, p).scores()
    assert s.iou[0] == pytest.approx(4 / 8)
    assert s.iou[1] == pytest.approx(1 / 5)
    # a simple 1/3 case: truth {a,b}, prediction {b,c}
    t2 = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    p2 = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]])
    s2 = ConfusionMatrix(2).update(t2, p2).scores()
    assert s2.iou[1] == pytest.approx(1 / 3)
    assert s2.dice[1] == pytest.approx(0.5)
    assert s2.precision[1] == pytest.approx(0.5)
    assert s2.recall[1] == pytest.approx(0.5)
    assert s2.pixel_accuracy == pytest.approx(7 / 9)
    assert s2.iou[0] == pytest.approx(6 / 8)
    assert s2.miou == pytest.approx((1 / 3 + 6 / 8) / 2)
    assert s2.fwiou == pytest.approx(7 / 9 * 6 / 8 + 2 / 9 * 1 / 3)


def test_absent_class_left_out_of_means():
    t = np.array([[0, 0], [1, 1]])
    s = ConfusionMatrix(3).update(t, t).scores()
    assert np.isnan(s.iou[2]) and np.isnan(s.dice[2])
    assert s.miou == 1.0 and s.mdice == 1.0
    # predicted but absent from the truth counts as IoU 0
    p = np.array([[0, 2], [1, 1]])
    s = ConfusionMatrix(3).update(t, p).scores()
    assert s.iou[2] == 0.0
    assert s.miou == pytest.approx((0.5 + 1 + 0) / 3)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, (5, 20, 20))
    p = rng.integers(0, 4, (5, 20, 20))
    cm = ConfusionMatrix(4)
    for i in range(5):
        cm.update(t[i], p[i])
    assert (cm.matrix == confusion_matrix(t, p, 4)).all()


def test_bad_labels_raise():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([5]), np.array([0]), 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1]), np.array([0]), 3)


def test_to_dict_and_table():
    t = np.array([[0, 1], [1, 1]])
    s = ConfusionMatrix(3).update(t, t).scores(["a", "b", "c"])
    d = s.to_dict()
    assert d["miou"] == 1.0 and d["per_class"]["c"]["iou"] is None
    assert "mean" in s.table() and "b" in s.table()


labels = arrays(np.int64, (6, 7), elements=st.integers(0, 3))


@settings(max_examples=60, deadline=None)
@given(labels, labels)
def test_dice_iou_identity(t, p):
    s = ConfusionMatrix(4).update(t, p).scores()
    ok = ~np.isnan(s.iou)
    assert np.allclose(s.dice[ok], 2 * s.iou[ok] / (1 + s.iou[ok]))


@settings(max_examples=40, deadline=None)
@given(labels)
def test_perfect_prediction_scores_one(t):
    s = ConfusionMatrix(4).update(t, t).scores()
    assert s.miou == 1.0 and s.mdice == 1.0 and s.pixel_accuracy == 1.0
    assert s.fwiou == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(labels, labels, arrays(np.bool_, (6, 7)), arrays(np.int64, (6, 7), elements=st.integers(0, 3)))
def test_ignore_pixels_change_nothing(t, p, ignore, noise):
    assume_any = (~ignore).any()
    t_ign = np.where(ignore, 255, t)
    base = confusion_matrix(t[~ignore], p[~ignore], 4) if assume_any else np.zeros((4, 4))
    # whatever is predicted on ignored pixels does not matter
    p_changed = np.where(ignore, noise, p)
    assert (confusion_matrix(t_ign, p_changed, 4) == base).all()
