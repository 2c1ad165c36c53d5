import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgeseg.data.check import check_dataset
from edgeseg.data.stats import inverse_frequency_weights, median_frequency_weights
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.pairs import Pair, find_pairs, holdout_pattern, split_by_pattern


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeseg.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_class_weights():
    counts = np.array([10, 30, 60, 0])
    inv = inverse_frequency_weights(counts)
    assert inv == pytest.approx([100 / 30, 100 / 90, 100 / 180, 0])
    med = median_frequency_weights(counts)
    assert med == pytest.approx([3.0, 1.0, 0.5, 0])


def test_default_split_is_every_fifth_stem_and_reproducible():
    stems = [f"scene_{i:02d}" for i in range(12)]
    pairs = [Pair(s, f"{s}.png", f"{s}.png") for s in reversed(stems)]  # listing order is irrelevant
    pattern = holdout_pattern(pairs)
    assert pattern == "scene_04,scene_09" == holdout_pattern(list(reversed(pairs)))
    train, val = split_by_pattern(pairs, pattern)
    assert [p.stem for p in val] == ["scene_09", "scene_04"] and len(train) == 10
    assert holdout_pattern(pairs[:3]) == "scene_11"  # fewer than five: the last by name
    with pytest.raises(EdgesegError, match="validation needs a second one"):
        holdout_pattern(pairs[:1])
    train, val = split_by_pattern(pairs, "scene_0*, scene_11")  # globs, comma-separated
    assert len(val) == 11 and [p.stem for p in train] == ["scene_10"]
    with pytest.raises(EdgesegError, match="nothing to train on"):
        split_by_pattern(pairs, "scene_*")
    train, val = split_by_pattern(pairs, "scene_*", need_train=False)  # evaluation, export
    assert train == [] and len(val) == 12


@pytest.mark.shared
def test_check_dubai(dubai_dir, dubai_classes):
    report = check_dataset(str(dubai_dir), ClassTable.load(dubai_classes))
    assert report.ok, report.problems
    assert report.pairs == 63
    total = report.counts.sum() + report.ignored
    land = report.counts[report.class_names.index("Land")] / total
    assert 0.50 < land < 0.57
    assert 0 < report.ignored / total < 0.01  # black + Unlabeled pixels counted as ignore


@pytest.mark.shared
def test_cli_check_broken_copy(tmp_path, dubai_dir, dubai_classes):
    copy = tmp_path / "dubai"
    (copy / "images").mkdir(parents=True)
    (copy / "masks").mkdir()
    for stem in ("tile1_image_part_001", "tile1_image_part_002", "tile2_image_part_001"):
        shutil.copy(dubai_dir / "images" / f"{stem}.jpg", copy / "images")
        shutil.copy(dubai_dir / "masks" / f"{stem}.png", copy / "masks")
    ok = run_cli("data", "check", copy, "--classes", dubai_classes)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (copy / "masks" / "tile1_image_part_001.png").unlink()
    recoloured = copy / "masks" / "tile2_image_part_001.png"
    rgb = np.array(Image.open(recoloured).convert("RGB"))
    rgb[:10, :10] = (1, 2, 3)
    Image.fromarray(rgb).save(recoloured)
    bad = run_cli("data", "check", copy, "--classes", dubai_classes)
    assert bad.returncode == 1
    assert "tile1_image_part_001.jpg: no mask" in bad.stdout
    assert "tile2_image_part_001.png: colour #010203 (100 pixels)" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_cli_errors_are_one_line(tmp_path, dubai_classes):
    res = run_cli("data", "check", tmp_path / "nothing", "--classes", dubai_classes)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "does not exist" in res.stderr


def test_size_mismatch_and_split(tmp_path, dubai_classes):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("a_1", "b_1"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    Image.fromarray(np.full((8, 8, 3), (60, 16, 152), np.uint8)).save(tmp_path / "masks" / "a_1.png")
    Image.fromarray(np.full((4, 8, 3), (60, 16, 152), np.uint8)).save(tmp_path / "masks" / "b_1.png")
    report = check_dataset(str(tmp_path), ClassTable.load(dubai_classes))
    assert report.pairs == 1 and len(report.problems) == 1
    assert "b_1.png: mask is 8x4 but its image is 8x8" in report.problems[0]
    train, val = split_by_pattern(find_pairs(tmp_path).pairs, "b_*")
    assert [p.stem for p in val] == ["b_1"] and [p.stem for p in train] == ["a_1"]
