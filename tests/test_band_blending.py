"""Blending only where tiles overlap: the window is 1 where one tile alone covers a pixel, so
those pixels take the tile's scores (or their argmax) straight, and only the overlap bands are
summed. The results equal summing every pixel of every tile, bit for bit."""

import numpy as np
import pytest
import tiny_models
from tiny_models import smooth_image

from firmware_bridge.runtime import tiling
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions
from firmware_bridge.runtime.tiling import Box


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models.onnx_models(tmp_path_factory)


def test_window_is_flat_inside_and_tapers_across_the_overlap():
    f = 0.01
    inner = tiling.tile_window(Box(3, 3, 13, 13), 20, 20, floor=f, ramp=3)
    ramp = np.sin(np.pi * (np.arange(3) + 0.5) / 6) ** 2
    prof = np.concatenate([ramp, np.ones(4), ramp[::-1]])
    np.testing.assert_allclose(inner, 1 - (1 - f) * (1 - np.outer(prof, prof)), rtol=1e-6)
    assert (inner[3:7, 3:7] == 1.0).all()  # exactly 1: the blended score is the tile's
    edge = tiling.tile_window(Box(0, 0, 10, 10), 20, 20, floor=f, ramp=3)
    assert (edge[:7, :7] == 1.0).all() and edge[9, 9] < edge[7, 7] < 1
    # two neighbours' ramps add up to 1 across an overlap of the ramp's width
    np.testing.assert_allclose(prof[-3:] + prof[:3], 1.0, rtol=1e-12)
    # a ramp of half the tile is the Hann window over the whole tile
    np.testing.assert_allclose(tiling.tile_window(Box(3, 3, 7, 7), 10, 10, floor=f, ramp=2),
                               tiling.tile_window(Box(3, 3, 7, 7), 10, 10, floor=f), rtol=1e-6)
    assert (tiling.tile_window(Box(3, 3, 7, 7), 10, 10, ramp=0) == 1.0).all()
    with pytest.raises(ValueError):
        tiling.tile_window(Box(0, 0, 4, 4), 10, 10, ramp=-1)


def test_covered_once_runs_and_grid_overlap():
    # starts 0, 3, 6 of 4 px tiles on 10 px: covered once at 0-2, 4-5, 7-9
    once = tiling.covered_once(10, 4, 1)
    assert once.tolist() == [1, 1, 1, 0, 1, 1, 0, 1, 1, 1]
    assert tiling.runs(once) == [(0, 3), (4, 6), (7, 10)]
    assert tiling.runs(~once) == [(3, 4), (6, 7)]
    assert tiling.runs(np.zeros(3, bool)) == []
    assert tiling.covered_once(3, 8, 2).tolist() == [True] * 8  # one padded tile
    assert tiling.grid_overlap(tiling.tile_boxes(10, 10, 4, 1)) == 1
    assert tiling.grid_overlap(tiling.tile_boxes(4, 10, 4, 2)) == 2
    assert tiling.grid_overlap([Box(0, 0, 4, 4)]) is None


@pytest.mark.parametrize(("tile", "overlap", "shape"),
                         [(64, 16, (300, 420)), (96, 32, (200, 250)), (64, 0, (150, 170)),
                          (64, 40, (130, 200)), (64, 16, (40, 300))])
def test_interior_straight_from_the_tile_equals_summing_everything(models, tile, overlap, shape):
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=tile, overlap=overlap, batch=4))
    image = smooth_image(*shape, seed=7)
    got = seg.predict_tiled(image, probabilities=True)
    padded = tiling.pad_to_tile(image, tile)
    boxes = tiling.tile_boxes(*padded.shape[:2], tile, overlap)
    scores = [seg.scores(padded[None, b.y0 : b.y1, b.x0 : b.x1])[0] for b in boxes]
    summed = tiling.merge_tiles(*padded.shape[:2], boxes, scores)[: shape[0], : shape[1]]
    # one tile per backend call on both sides: the same scores, the same sums in the same
    # order, and window 1 inside (s * 1 / 1 == s): equal to the last bit
    np.testing.assert_array_equal(got.probabilities, summed)
    np.testing.assert_array_equal(got.mask, seg.to_mask(summed))
    np.testing.assert_array_equal(seg.predict_tiled(image).mask, got.mask)  # mask-only path


def test_the_window_change_moves_masks_only_near_tile_borders(models):
    """Against the Hann window over the whole tile (the window before), masks differ only
    where tiles overlap, and there on few pixels."""
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16, batch=1))
    image = smooth_image(300, 420, seed=8)
    boxes = tiling.tile_boxes(300, 420, 64, 16)
    scores = [seg.scores(image[None, b.y0 : b.y1, b.x0 : b.x1])[0] for b in boxes]
    hann = seg.to_mask(tiling.merge_tiles(300, 420, boxes, scores, ramp=None))
    now = seg.predict_tiled(image).mask
    once = tiling.covered_once(300, 64, 16)[:, None] & tiling.covered_once(420, 64, 16)[None, :]
    differ = hann != now
    assert not differ[once].any()  # one tile alone: its argmax either way
    assert differ.mean() < 0.01


def _write_tif(path, image):
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(path, "w", driver="GTiff", height=image.shape[0], width=image.shape[1],
                       count=3, dtype="uint8", crs="EPSG:32640",
                       transform=rasterio.transform.Affine(0.5, 0, 5e5, 0, -0.5, 2.8e6)) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return path


def _streamed(seg, image, tmp_path, block):
    import rasterio

    from firmware_bridge.io.raster import predict_geotiff

    src = _write_tif(tmp_path / "scene.tif", image)
    with rasterio.open(predict_geotiff(seg, src, tmp_path / "mask.tif", block=block).mask) as ds:
        return ds.read(1)


@pytest.mark.parametrize("overlap", [0, 16, 40])
def test_streamed_equals_whole_image_for_any_overlap(models, tmp_path, overlap):
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=overlap, batch=3))
    image = smooth_image(250, 330, seed=9)
    np.testing.assert_array_equal(_streamed(seg, image, tmp_path, 100),
                                  seg.predict_tiled(image).mask)


@pytest.mark.parametrize("quant", ["uint8", "int8"])
@pytest.mark.parametrize("overlap", [0, 16, 40])
def test_integer_scores_blend_without_dequantising(models, tmp_path, quant, overlap):
    opts = dict(tile=64, overlap=overlap, batch=4)
    seg = Segmenter(models[quant], options=SegmenterOptions(**opts))
    flt = Segmenter(models[quant], options=SegmenterOptions(**opts, integer_blend=False))
    assert seg.integer_masks() and not flt.integer_masks()
    calls = []
    to_scores = seg.to_scores
    seg.to_scores = lambda *a, **k: calls.append(1) or to_scores(*a, **k)
    image = smooth_image(300, 420, seed=10)
    got = seg.predict_tiled(image).mask
    assert calls == []  # nothing dequantised
    ref = flt.predict_tiled(image).mask
    once = (tiling.covered_once(300, 64, overlap)[:, None]
            & tiling.covered_once(420, 64, overlap)[None, :])
    differ = got != ref
    # one tile alone: the argmax of the 8-bit scores is the argmax of their dequantised values
    assert not differ[once].any()
    # overlap bands: 6-bit window weights move only near-ties (measured 0.08 % at 16 px, 0.5 %
    # at 40 px on this image)
    assert differ.mean() <= 0.01
    np.testing.assert_array_equal(_streamed(seg, image, tmp_path, 100), got)
    # probabilities asked for: the float path, as before
    np.testing.assert_array_equal(seg.predict_tiled(image, probabilities=True).mask, ref)


def test_integer_weights_cannot_overflow_16_bits(models):
    for tile, overlap, length in [(64, 16, 300), (64, 40, 130), (64, 30, 200), (256, 32, 4096)]:
        top = tiling.integer_weight_top(length, length, (tile, tile), overlap)
        most = int(tiling.cover_count(length, tile, overlap).max()) ** 2
        assert tiling.INT_WEIGHT_MIN <= top <= tiling.INT_WEIGHT_MAX
        assert 255 * top * most <= 65535
        w = tiling.integer_window(Box(tile, tile, 2 * tile, 2 * tile), 4 * tile, 4 * tile,
                                  overlap, top)
        assert w.dtype == np.uint16 and w.min() >= 1 and w.max() == top
    assert tiling.integer_weight_top(4096, 4096, (256, 256), 32) == 64
    # 64 tiles over a pixel on each axis: too coarse for integers, the float blend is used
    assert tiling.integer_weight_top(200, 200, (64, 64), 63) < tiling.INT_WEIGHT_MIN
    seg = Segmenter(models["uint8"], options=SegmenterOptions(tile=64, overlap=63, batch=8))
    flt = Segmenter(models["uint8"], options=SegmenterOptions(tile=64, overlap=63, batch=8,
                                                               integer_blend=False))
    image = smooth_image(100, 90, seed=11)
    np.testing.assert_array_equal(seg.predict_tiled(image).mask, flt.predict_tiled(image).mask)


def test_overlap_sums_hold_only_the_overlap_bands_and_equal_full_accumulators():
    """The compact sums equal full-size accumulators on every summed pixel, hold about the
    overlap bands' share of a block, and refuse a pixel that one tile alone covers."""
    from firmware_bridge.runtime.overlap import OverlapSums

    h, w, tile, overlap = 928, 1024, 256, 32
    region = Box(0, 0, 896, 1024)  # a block of rows cut on tile starts, 32 rows handed down
    below = 32
    rows_once = np.concatenate([tiling.covered_once(h, tile, overlap)[: region.height],
                                np.zeros(below, bool)])
    cols_once = tiling.covered_once(w, tile, overlap)[: region.width]
    sums = OverlapSums(rows_once, cols_once, 3, np.float32, (0, 0))
    full_acc = np.zeros((region.height + below, w, 3), np.float32)
    full_w = np.zeros((region.height + below, w), np.float32)
    rng = np.random.default_rng(0)
    boxes = tiling.tile_boxes(h, w, tile, overlap)
    for box in boxes:
        s = rng.random((tile, tile, 3), np.float32)
        window = tiling.tile_window(box, h, w, ramp=overlap)
        tiling.accumulate(full_acc, full_w, s, window, box)
        # the parts of the tile outside what it alone covers, as the blend hands them over
        ys = np.flatnonzero(rows_once[box.y0 : min(box.y1, len(rows_once))])
        xs = np.flatnonzero(cols_once[box.x0 : box.x1])
        if len(ys) and len(xs):
            core = Box(box.y0 + ys[0], box.x0 + xs[0], box.y0 + ys[-1] + 1, box.x0 + xs[-1] + 1)
            parts = [Box(box.y0, box.x0, core.y0, box.x1), Box(core.y1, box.x0, box.y1, box.x1),
                     Box(core.y0, box.x0, core.y1, core.x0), Box(core.y0, core.x1, core.y1, box.x1)]
        else:
            parts = [box]
        for p in parts:
            if p.height > 0 and p.width > 0:
                sl = (slice(p.y0 - box.y0, p.y1 - box.y0), slice(p.x0 - box.x0, p.x1 - box.x0))
                sums.add(s[sl], window[sl], p)
    seen = np.zeros((region.height, w), bool)
    for (rows, cols), acc, wsum in sums.spans(region.height):
        np.testing.assert_array_equal(acc, full_acc[rows, cols])
        np.testing.assert_array_equal(wsum, full_w[rows, cols])
        assert not seen[rows, cols].any()
        seen[rows, cols] = True
    once = rows_once[: region.height, None] & cols_once[None, :]
    np.testing.assert_array_equal(seen, ~once)  # every pixel more than one tile covers
    band_acc, band_w = sums.rows_from(region.height)
    np.testing.assert_array_equal(band_acc, full_acc[region.height :])
    np.testing.assert_array_equal(band_w, full_w[region.height :])
    held = sums.band_acc.size + sums.cross_acc.size
    assert held < 0.4 * full_acc.size  # the last column of tiles overlaps by 160 px here
    with pytest.raises(ValueError, match="one tile alone covers"):
        sums.add(np.zeros((10, 10, 3), np.float32), np.ones((10, 10), np.float32),
                 Box(100, 100, 110, 110))
    with pytest.raises(ValueError, match="not all summed"):
        sums.rows_from(region.height - 100)
