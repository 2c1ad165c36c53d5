"""Tiling math: exact boxes (SAHI style), padding, windows, blending."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.runtime import tiling
from firmware_bridge.runtime.tiling import Box


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "starts"),
    [
        (10, 4, 1, [0, 3, 6]),
        (10, 4, 2, [0, 2, 4, 6]),
        (10, 4, 0, [0, 4, 6]),  # last tile shifted inward: overlaps its neighbour by 2
        (512, 256, 32, [0, 224, 256]),
        (480, 256, 32, [0, 224]),
        (1000, 256, 64, [0, 192, 384, 576, 744]),
        (257, 256, 0, [0, 1]),
        (256, 256, 32, [0]),
        (100, 256, 32, [0]),  # smaller than a tile: one tile, the image is padded
        (1, 1, 0, [0]),
    ],
)
def test_tile_starts_exact(length, tile, overlap, starts):
    assert tiling.tile_starts(length, tile, overlap) == starts


def test_tile_boxes_exact_small():
    assert tiling.tile_boxes(10, 7, 4, 1) == [
        Box(0, 0, 4, 4), Box(0, 3, 4, 7),
        Box(3, 0, 7, 4), Box(3, 3, 7, 7),
        Box(6, 0, 10, 4), Box(6, 3, 10, 7),
    ]


def test_tile_boxes_rectangular_tile():
    boxes = tiling.tile_boxes(300, 600, (144, 256), 32)
    # rows: stride 112 -> 0, 112, then 300-144=156; columns: stride 224 -> 0, 224, 600-256=344
    assert [(b.y0, b.x0) for b in boxes] == [
        (0, 0), (0, 224), (0, 344), (112, 0), (112, 224), (112, 344),
        (156, 0), (156, 224), (156, 344),
    ]
    assert all(b.height == 144 and b.width == 256 for b in boxes)


def test_tile_boxes_image_smaller_than_tile():
    assert tiling.tile_boxes(40, 300, 64, 16) == [
        Box(0, 0, 64, 64), Box(0, 48, 64, 112), Box(0, 96, 64, 160), Box(0, 144, 64, 208),
        Box(0, 192, 64, 256), Box(0, 236, 64, 300),
    ]


@pytest.mark.parametrize(("tile", "overlap"), [(4, 4), (4, 5), (4, -1), (0, 0)])
def test_bad_overlap_or_tile_raises(tile, overlap):
    with pytest.raises(ValueError, match="overlap|positive"):
        tiling.tile_starts(10, tile, overlap)


def test_bad_length_raises():
    with pytest.raises(ValueError, match="positive"):
        tiling.tile_starts(0, 4, 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 700), st.integers(1, 300), st.data())
def test_tiles_cover_axis_inside_image_with_overlap(length, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    starts = tiling.tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert starts[-1] + tile == max(length, tile)
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + tile - b >= overlap  # neighbours share at least the overlap
        assert b - a <= tile - overlap  # and never more stride than asked
    if length >= tile:
        assert all(s + tile <= length for s in starts)


def test_block_regions_exact():
    assert tiling.block_regions(5, 7, 4) == [
        Box(0, 0, 4, 4), Box(0, 4, 4, 7), Box(4, 0, 5, 4), Box(4, 4, 5, 7)
    ]
    with pytest.raises(ValueError):
        tiling.block_regions(5, 7, 0)


def test_boxes_touching_and_bounding_box():
    boxes = tiling.tile_boxes(10, 7, 4, 1)
    touching = tiling.boxes_touching(boxes, Box(4, 0, 6, 3))
    assert touching == [Box(3, 0, 7, 4)]  # [4,6) x [0,3) lies in the 2nd row, 1st column only
    assert tiling.bounding_box(boxes) == Box(0, 0, 10, 7)


def test_pad_to_tile_reflects_and_keeps_top_left():
    img = np.arange(15).reshape(3, 5)
    out = tiling.pad_to_tile(img, (5, 6))
    assert out.shape == (5, 6)
    np.testing.assert_array_equal(out[:3, :5], img)
    np.testing.assert_array_equal(out[3], img[1, [0, 1, 2, 3, 4, 3]])  # reflect about row 2
    np.testing.assert_array_equal(out[4], img[0, [0, 1, 2, 3, 4, 3]])
    np.testing.assert_array_equal(out[:3, 5], img[:, 3])
    assert tiling.pad_to_tile(img, 3) is img
    assert tiling.pad_to_tile(np.ones((1, 2, 3)), 4).shape == (4, 4, 3)  # 1-px axis: repeat


def test_tile_window_tapers_only_towards_other_tiles():
    f = 0.01
    corner = tiling.tile_window(Box(0, 0, 4, 4), 10, 10, floor=f)
    prof = np.array([1.0, 1.0, np.sin(np.pi * 2.5 / 4) ** 2, np.sin(np.pi * 3.5 / 4) ** 2])
    np.testing.assert_allclose(corner, f + (1 - f) * np.outer(prof, prof), rtol=1e-6)
    inner = tiling.tile_window(Box(3, 3, 7, 7), 10, 10, floor=f)
    hann = np.sin(np.pi * (np.arange(4) + 0.5) / 4) ** 2
    np.testing.assert_allclose(inner, f + (1 - f) * np.outer(hann, hann), rtol=1e-6)
    whole = tiling.tile_window(Box(0, 0, 10, 10), 10, 10, floor=f)
    np.testing.assert_array_equal(whole, np.ones((10, 10), np.float32))
    assert inner.min() >= f and inner.max() <= 1
    with pytest.raises(ValueError):
        tiling.tile_window(Box(0, 0, 4, 4), 10, 10, floor=0)


def test_merge_tiles_weighted_mean_by_hand():
    boxes = [Box(0, 0, 1, 4), Box(0, 2, 1, 6)]  # two 1x4 tiles on a 1x6 image, overlap 2
    scores = [np.full((1, 4, 1), 1.0, np.float32), np.full((1, 4, 1), 3.0, np.float32)]
    f = 0.5
    out = tiling.merge_tiles(1, 6, boxes, scores, floor=f)
    wa = f + (1 - f) * np.array([1, 1, np.sin(np.pi * 2.5 / 4) ** 2, np.sin(np.pi * 3.5 / 4) ** 2])
    wb = f + (1 - f) * np.array([np.sin(np.pi * 0.5 / 4) ** 2, np.sin(np.pi * 1.5 / 4) ** 2, 1, 1])
    expected = np.array([1, 1, 0, 0, 3, 3], np.float64)
    expected[2:4] = (wa[2:] * 1 + wb[:2] * 3) / (wa[2:] + wb[:2])
    np.testing.assert_allclose(out[0, :, 0], expected, rtol=1e-6)


def test_merge_tiles_of_identical_scores_is_identity():
    rng = np.random.default_rng(0)
    full = rng.random((23, 31, 3)).astype(np.float32)
    boxes = tiling.tile_boxes(23, 31, 8, 3)
    out = tiling.merge_tiles(23, 31, boxes, [full[b.y0:b.y1, b.x0:b.x1] for b in boxes])
    np.testing.assert_allclose(out, full, rtol=1e-5)
    with pytest.raises(ValueError):
        tiling.merge_tiles(23, 31, boxes, [])


def test_accumulate_clips_to_region():
    acc = np.zeros((2, 3, 1), np.float32)
    wsum = np.zeros((2, 3), np.float32)
    box = Box(0, 0, 4, 4)
    scores = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    tiling.accumulate(acc, wsum, scores, np.ones((4, 4), np.float32), box, origin=(1, 2))
    np.testing.assert_array_equal(acc[..., 0], [[6, 7, 0], [10, 11, 0]])
    np.testing.assert_array_equal(wsum, [[1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(tiling.normalise(acc, wsum)[..., 0], [[6, 7, 0], [10, 11, 0]])


def test_stream_regions_cut_rows_on_tile_starts():
    regions = tiling.stream_regions(4096, 4096, 256, 32, 1024)
    rows = sorted({(r.y0, r.y1) for r in regions})
    assert rows == [(0, 896), (896, 1792), (1792, 2688), (2688, 3584), (3584, 4096)]
    assert sorted({(r.x0, r.x1) for r in regions}) == [(0, 1024), (1024, 2048), (2048, 3072),
                                                        (3072, 4096)]
    boxes = tiling.tile_boxes(4096, 4096, 256, 32)
    assert [tiling.rows_below(boxes, y0) for y0, _ in rows] == [0, 32, 32, 32, 32]
    # a block under one stride still cuts on every tile start; a scene under a tile is one row
    assert sorted({(r.y0, r.y1) for r in tiling.stream_regions(300, 50, 64, 16, 20)}) == [
        (0, 48), (48, 96), (96, 144), (144, 192), (192, 300)]
    assert tiling.stream_regions(40, 300, 64, 16, 256) == [Box(0, 0, 40, 256), Box(0, 256, 40, 300)]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 900), st.integers(1, 300), st.integers(1, 200), st.integers(8, 128),
       st.data())
def test_stream_regions_tile_the_scene_and_hand_down_overlap_rows(height, width, block, tile,
                                                                 data):
    overlap = data.draw(st.integers(0, tile - 1))
    regions = tiling.stream_regions(height, width, tile, overlap, block)
    cover = np.zeros((height, width), np.int32)
    for r in regions:
        cover[r.y0 : r.y1, r.x0 : r.x1] += 1
    assert (cover == 1).all()
    boxes = tiling.tile_boxes(max(height, tile), width, tile, overlap)
    for y0 in {r.y0 for r in regions} - {0}:
        assert tiling.rows_below(boxes, y0) == overlap  # the band handed down: overlap rows
