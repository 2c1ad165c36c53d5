import numpy as np

from edgeseg.data.check import check_dataset
from edgeseg.data.synthetic import CLASSES, generate_scene, write_dataset
from firmware_bridge.io.classes import ClassTable


def test_same_seed_same_scene():
    a = generate_scene(96, 128, seed=5)
    b = generate_scene(96, 128, seed=5)
    c = generate_scene(96, 128, seed=6)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert not (a[0] == c[0]).all()
    assert a[0].shape == (96, 128, 3) and a[1].shape == (96, 128)


def test_every_class_present_and_colours_differ():
    image, mask = generate_scene(512, 512, seed=1)
    shares = np.bincount(mask.ravel(), minlength=len(CLASSES)) / mask.size
    assert (shares > 0.02).all(), shares
    means = np.array([image[mask == c].mean(axis=0) for c in range(len(CLASSES))])
    # classes are separable by colour on average: every pair of class means differs
    dists = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert dists[~np.eye(len(CLASSES), dtype=bool)].min() > 10


def test_written_dataset_passes_check(tmp_path):
    root = write_dataset(tmp_path / "syn", count=3, size=(64, 80), seed=2)
    report = check_dataset(str(root), ClassTable.load(root / "classes.csv"))
    assert report.ok and report.pairs == 3
