"""The pipelined tiled path: the same masks as the sequential one, errors surfacing as before."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from tiny_models import smooth_image

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime import pipeline
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

rasterio = pytest.importorskip("rasterio")


def test_run_ahead_keeps_order_and_runs_on_the_worker():
    from concurrent.futures import ThreadPoolExecutor

    seen = []

    def run(x):
        seen.append(threading.current_thread().name)
        return x * 10

    with ThreadPoolExecutor(1, "model") as worker:
        out = list(pipeline.run_ahead(range(7), lambda x: x + 1, run, worker, depth=2))
    assert out == [(i, (i + 1) * 10) for i in range(7)]
    assert set(seen) == {"model_0"}


def test_stream_writes_in_order_and_reraises_the_first_error():
    written = []
    pipeline.stream(range(9), lambda i: i * 2, lambda i, x: x + 1, lambda i, y: written.append((i, y)))
    assert written == [(i, 2 * i + 1) for i in range(9)]

    def read(i):
        if i == 4:
            raise EdgesegError("block 4: unreadable")
        return i

    written.clear()
    with pytest.raises(EdgesegError, match="block 4"):
        pipeline.stream(range(9), read, lambda i, x: x, lambda i, y: written.append(i))
    assert all(i < 4 for i in written)


@pytest.mark.parametrize("model", ["nchw", "nhwc", "int8", "nchw_xml", "uint8_xml"])
@pytest.mark.parametrize(("block", "batch"), [(64, 1), (100, 4), (256, 3)])
def test_pipelined_geotiff_equals_sequential(models, tmp_path, model, block, batch):
    from firmware_bridge.io.raster import predict_geotiff
    from firmware_bridge.io.synthetic_raster import write_synthetic_raster

    src = tmp_path / "scene.tif"
    write_synthetic_raster(src, 300, 3, block=128)
    masks = []
    for pipelined in (False, True):
        seg = Segmenter(models[model], options=SegmenterOptions(
            tile=64, overlap=16, batch=batch, pipeline=pipelined))
        out = predict_geotiff(seg, src, tmp_path / f"m{pipelined}.tif", block=block).mask
        with rasterio.open(out) as ds:
            masks.append(ds.read(1))
    np.testing.assert_array_equal(masks[0], masks[1])


def test_pipelined_tiled_equals_sequential_in_memory(models):
    image = smooth_image(333, 517, seed=9)
    a = Segmenter(models["nchw"], options=SegmenterOptions(batch=2, pipeline=False))
    b = Segmenter(models["nchw"], options=SegmenterOptions(batch=2, pipeline=True))
    ra, rb = a.predict_tiled(image, probabilities=True), b.predict_tiled(image, probabilities=True)
    np.testing.assert_array_equal(ra.mask, rb.mask)
    np.testing.assert_array_equal(ra.probabilities, rb.probabilities)


def test_a_failing_model_call_surfaces_and_leaves_no_output(models, tmp_path):
    from firmware_bridge.io.raster import predict_geotiff
    from firmware_bridge.io.synthetic_raster import write_synthetic_raster

    src = tmp_path / "scene.tif"
    write_synthetic_raster(src, 400, 3, block=128)
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16))
    calls = {"n": 0}
    run = seg.backend.run

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 30:
            raise EdgesegError("nchw.onnx: the runtime failed")
        return run(x)

    seg.backend.run = flaky
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgesegError, match="the runtime failed"):
        predict_geotiff(seg, src, out / "m.tif", block=128)
    assert list(out.iterdir()) == []


def test_blocks_of_a_row_share_their_border_tiles(models, tmp_path):
    from firmware_bridge.io.blocks import RowShare, SceneGrid, open_raster, predict_block, read_block
    from firmware_bridge.io.synthetic_raster import write_synthetic_raster

    src = tmp_path / "scene.tif"
    write_synthetic_raster(src, 300, 3, block=128)
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16, batch=3))
    tiles = {"n": 0}
    run = seg.backend.run

    def counting(x):
        tiles["n"] += len(x)
        return run(x)

    seg.backend.run = counting
    grid = SceneGrid(300, 300, seg.tile, seg.overlap)
    masks, counts = [], []
    with open_raster(src) as ds:
        for share in (None, RowShare()):
            tiles["n"] = 0
            masks.append([predict_block(seg, grid, r, read_block(seg, ds, [1, 2, 3], grid, r, src),
                                        share)[0] for r in grid.regions(100)])
            counts.append(tiles["n"])
    for a, b in zip(*masks, strict=True):
        np.testing.assert_array_equal(a, b)
    assert counts[1] < counts[0]  # the tiles on the borders between the blocks of a row, once
