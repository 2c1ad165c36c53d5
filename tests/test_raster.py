"""Streamed GeoTIFF prediction and image files: georeferencing, equality with in-memory
tiling, and no partial output on failure."""

import numpy as np
import pytest
import tiny_models
from PIL import Image
from tiny_models import smooth_image

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.raster import predict_file, predict_geotiff, predict_image
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

CRS = "EPSG:32640"
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 2800000.0)


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    models = tiny_models.onnx_models(tmp_path_factory)
    return Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16, batch=8))


def write_tif(path, image, nodata=None, **extra):
    profile = {"driver": "GTiff", "height": image.shape[0], "width": image.shape[1],
               "count": image.shape[2], "dtype": image.dtype.name, "crs": CRS,
               "transform": TRANSFORM, "nodata": nodata, **extra}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return path


@pytest.mark.parametrize(("shape", "block"), [((300, 420), 128), ((300, 420), 1024),
                                              ((40, 300), 256)])
def test_geotiff_round_trip_keeps_georeference_and_equals_in_memory(seg, tmp_path, shape, block):
    image = smooth_image(*shape, seed=11)
    src = write_tif(tmp_path / "scene.tif", image)
    out = predict_geotiff(seg, src, tmp_path / "mask.tif", block=block).mask
    with rasterio.open(out) as ds:
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM
        assert (ds.count, ds.dtypes[0], ds.nodata) == (1, "uint8", IGNORE_INDEX)
        assert ds.compression is not None and ds.compression.value == "DEFLATE"
        assert ds.colormap(1)[0] == (255, 0, 0, 255)  # metadata colour of class 0
        if min(shape) >= 256:
            assert ds.block_shapes[0] == (256, 256)
        streamed = ds.read(1)
    np.testing.assert_array_equal(streamed, seg.predict_tiled(image).mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "scene.tif"]


def test_nodata_pixels_become_ignore(seg, tmp_path):
    image = smooth_image(200, 200, seed=12)
    image[:20, :30] = 0
    src = write_tif(tmp_path / "nd.tif", image, nodata=0)
    with rasterio.open(predict_geotiff(seg, src, tmp_path / "m.tif", block=128).mask) as ds:
        mask = ds.read(1)
    assert np.all(mask[:20, :30] == IGNORE_INDEX)
    assert np.all(mask[20:, :] < 4)


def test_band_selection(seg, tmp_path):
    image = smooth_image(120, 130, seed=13)
    four = np.concatenate([image[..., ::-1], image[..., :1]], axis=-1)  # bands: B, G, R, extra
    src = write_tif(tmp_path / "four.tif", four)
    with pytest.raises(EdgesegError, match="4 band.*takes 3.*--bands"):
        predict_geotiff(seg, src, tmp_path / "m.tif")
    with pytest.raises(EdgesegError, match="cannot select band"):
        predict_geotiff(seg, src, tmp_path / "m.tif", bands=[1, 2, 7])
    out = predict_geotiff(seg, src, tmp_path / "m.tif", bands=[3, 2, 1]).mask
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), seg.predict_tiled(image).mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.tif", "m.tif"]


def test_truncated_raster_leaves_no_partial_output(seg, tmp_path):
    image = smooth_image(1024, 1024, seed=14)
    src = write_tif(tmp_path / "big.tif", image, tiled=True, blockxsize=256, blockysize=256)
    data = src.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(EdgesegError, match="cut.tif"):
        predict_geotiff(seg, cut, out_dir / "cut_mask.tif", block=256)
    assert list(out_dir.iterdir()) == []


def test_unwritable_destination_and_bad_files(seg, tmp_path):
    src = write_tif(tmp_path / "s.tif", smooth_image(64, 64))
    with pytest.raises(EdgesegError, match="does not exist"):
        predict_geotiff(seg, src, tmp_path / "no" / "such" / "m.tif")
    (tmp_path / "junk.tif").write_text("not a tiff")
    with pytest.raises(EdgesegError, match="unreadable raster"):
        predict_geotiff(seg, tmp_path / "junk.tif", tmp_path / "m.tif")
    with pytest.raises(EdgesegError, match="smaller than 16 px"):
        predict_geotiff(seg, write_tif(tmp_path / "tiny.tif", smooth_image(8, 64)),
                        tmp_path / "m.tif")


def test_png_mask_and_overlay(seg, tmp_path):
    image = smooth_image(90, 130, seed=15)
    Image.fromarray(image).save(tmp_path / "photo.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    written = predict_image(seg, tmp_path / "photo.png", out_dir, with_overlay=True).files
    assert [p.name for p in written] == ["photo_mask.png", "photo_overlay.png"]
    with Image.open(written[0]) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), seg.predict_tiled(image).mask)
        assert im.getpalette()[:6] == [255, 0, 0, 0, 255, 0]
    with Image.open(written[1]) as im:
        assert im.size == (130, 90) and im.mode == "RGB"
    tif = predict_file(seg, write_tif(tmp_path / "g.tif", image), out_dir).files
    assert [p.name for p in tif] == ["g_mask.tif"]


def test_a_mask_that_does_not_read_back_is_refused(tmp_path):
    """GDAL reports no failure while closing: a cut file or a block never stored shows on reading."""
    from rasterio.windows import Window

    from firmware_bridge.io.geotiff import check_readable, mask_writer
    from firmware_bridge.io.images import mask_profile

    whole = tmp_path / "whole.tif"
    with mask_writer(whole, mask_profile({}, 512, 512), [(0, 0, 0), (255, 0, 0)]) as out:
        out.write(np.random.default_rng(0).integers(0, 2, (512, 512), dtype=np.uint8), 1)
    check_readable(whole)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(OSError, match="does not read back"):
        check_readable(cut)
    sparse = tmp_path / "sparse.tif"
    with rasterio.open(sparse, "w", sparse_ok=True, **mask_profile({}, 512, 512)) as out:
        out.write(np.ones((256, 256), np.uint8), 1, window=Window(0, 0, 256, 256))
    with pytest.raises(OSError, match="block 0,1 is missing"):
        check_readable(sparse)


def test_every_tile_is_predicted_once_and_the_band_handed_down_is_overlap_rows(seg, tmp_path):
    from firmware_bridge.io.blocks import BandCarry
    from firmware_bridge.runtime import tiling

    # 19 x 19 tile positions (64 px tiles, 48 px stride), 4 x 4 blocks of 256 px
    image = smooth_image(928, 928, seed=16)
    src = write_tif(tmp_path / "scene.tif", image)
    positions = len(tiling.tile_boxes(928, 928, seg.tile, seg.overlap))
    assert positions == 361
    tiles, bands = [], []
    run, put = seg.backend.run, BandCarry.put

    def counting(x):
        tiles.append(len(x))
        return run(x)

    def keeping(self, region, band):
        bands.append((region, None if band is None else band))
        put(self, region, band)

    seg.backend.run = counting
    BandCarry.put = keeping
    try:
        out = predict_geotiff(seg, src, tmp_path / "mask.tif", block=256).mask
    finally:
        seg.backend.run = run
        BandCarry.put = put
    assert sum(tiles) == positions
    for region, band in bands:  # the band below each block: its tiles' overlap rows
        if region.y1 == 928:
            assert band is None
            continue
        assert band.y0 == region.y1 and band.tiles
        for box, scores in band.tiles.items():
            assert box.y0 < region.y1 < box.y1 and box.x1 > region.x0 and box.x0 < region.x1
            assert scores.shape == (seg.overlap, box.width, 4)
        covered = np.zeros(928, bool)
        for box in band.tiles:
            covered[box.x0 : box.x1] = True
        assert covered[region.x0 : region.x1].all()
    assert len({r.y0 for r, _ in bands}) > 1 and len({r.x0 for r, _ in bands}) > 1
    with rasterio.open(out) as ds:
        streamed = ds.read(1)
    # the same sums in the same order as tiling the whole image: identical masks
    np.testing.assert_array_equal(streamed, seg.predict_tiled(image).mask)


@pytest.mark.parametrize(("height", "width", "tile", "rows", "cols"),
                         [(700, 300, (256, 256), 224, 128), (700, 300, (256, 256), 96, 300),
                          (40, 50, (1, 50), 16, 20), (600, 256, (256, 256), 600, 256),
                          (2048, 1024, (256, 256), 896, 256), (70, 90, (16, 32), 20, 45)])
def test_masks_are_written_in_whole_output_tiles_each_once(height, width, tile, rows, cols):
    from firmware_bridge.io.blocks import WholeTiles
    from firmware_bridge.runtime.tiling import Box

    truth = np.random.default_rng(0).integers(0, 4, (height, width), dtype=np.uint8)
    written = np.full((height, width), 255, np.uint8)
    windows = []

    def write(box, mask):
        assert mask.shape == (box.height, box.width)
        assert (written[box.y0 : box.y1, box.x0 : box.x1] == 255).all()  # each pixel once
        written[box.y0 : box.y1, box.x0 : box.x1] = mask
        windows.append(box)

    out = WholeTiles(height, width, tile, write)
    regions = [Box(y, x, min(y + rows, height), min(x + cols, width))
               for y in range(0, height, rows) for x in range(0, width, cols)]
    held = 0
    for r in regions[::-1] if cols == width else regions:  # any order
        out.add(r, truth[r.y0 : r.y1, r.x0 : r.x1])
        held = max(held, out.held)
    np.testing.assert_array_equal(written, truth)
    assert out.complete
    th, tw = tile
    # whole tiles of the file (edges at the scene's border), each written once
    assert all(b.y0 % th == 0 and (b.y1 % th == 0 or b.y1 == height) and b.y1 - b.y0 <= th
               and b.x0 % tw == 0 and (b.x1 % tw == 0 or b.x1 == width) for b in windows)
    assert sum(b.height * b.width for b in windows) == height * width
    if cols % tw == 0 and cols != width:
        # row-major blocks on tile columns: what waits is the tile rows that two rows of
        # blocks share, not a whole row of blocks
        assert 0 < held <= th * width < rows * width


def test_whole_tiles_refuses_a_wrong_shape_and_pixels_that_come_twice():
    from firmware_bridge.io.blocks import WholeTiles
    from firmware_bridge.runtime.tiling import Box

    out = WholeTiles(64, 64, (32, 32), lambda box, mask: None)
    with pytest.raises(ValueError, match="mask of"):
        out.add(Box(0, 0, 1, 2), np.zeros((1, 1), np.uint8))
    out.add(Box(0, 0, 16, 64), np.zeros((16, 64), np.uint8))
    with pytest.raises(ValueError, match="a second time"):
        out.add(Box(8, 0, 32, 64), np.zeros((24, 64), np.uint8))


def test_window_buffers_are_recycled_and_never_more_than_in_flight():
    from firmware_bridge.io.blocks import WindowBuffers

    pool = WindowBuffers()
    a, buf_a = pool.take((3, 100, 120), np.uint8)
    assert a.flags.c_contiguous and a.shape == (3, 100, 120) and a.base is not None
    pool.give(buf_a)
    b, buf_b = pool.take((3, 90, 120), np.uint8)  # smaller: the same memory
    assert buf_b is buf_a and b.shape == (3, 90, 120)
    pool.give(buf_b)
    c, buf_c = pool.take((3, 110, 120), np.uint16)  # larger: the old one is let go
    assert buf_c is not buf_a and c.dtype == np.uint16 and buf_c.size == 3 * 110 * 120 * 2
    assert pool._free == []
    pool.give(buf_c)
    pool.give(None)
    assert len(pool._free) == 1
