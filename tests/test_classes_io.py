import numpy as np
import pytest
from PIL import Image

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable, parse_colour
from firmware_bridge.io.images import (
    read_image,
    read_mask,
    read_raster,
    write_mask_geotiff,
    write_mask_png,
)


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("name,colour,ignore\nsky,#0000FF,0\ntree,0 255 0,0\nvoid,#000000,1\n")
    return ClassTable.load(path)


def test_table_load(table):
    assert table.names == ["sky", "tree"]
    assert table.colours == [(0, 0, 255), (0, 255, 0)]
    assert table.ignore_colours == [(0, 0, 0)]
    assert table.hex_colours() == ["#0000FF", "#00FF00"]


def test_decode_rgb_mask(table):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (0, 0, 255)
    rgb[1, :] = (0, 255, 0)
    mask = table.decode_mask(rgb)
    assert mask.tolist() == [[0, IGNORE_INDEX, IGNORE_INDEX], [1, 1, 1]]


def test_unknown_colour_names_file_colour_and_count(table):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0] = (9, 9, 9)
    with pytest.raises(EdgesegError, match=r"m\.png: colour #090909 \(2 pixels\)"):
        table.decode_mask(rgb, "m.png")
    assert (table.decode_mask(rgb, unknown_to_ignore=True) == IGNORE_INDEX).all()


def test_decode_index_mask(table):
    idx = np.array([[0, 1], [255, 1]], np.uint8)
    assert table.decode_mask(idx).tolist() == [[0, 1], [255, 1]]
    with pytest.raises(EdgesegError, match="value 7"):
        table.decode_mask(np.array([[7]], np.uint8))


def test_bad_tables(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,colour,ignore\nsky,#GG0000,0\n")
    with pytest.raises(EdgesegError, match="bad.csv:2"):
        ClassTable.load(bad)
    with pytest.raises(EdgesegError, match="not found"):
        ClassTable.load(tmp_path / "none.csv")
    assert parse_colour("#3C1098") == (60, 16, 152)


def test_palette_png_decoded_to_rgb(tmp_path, table):
    # two palette files with different palettes that encode the same colours
    for name, order in (("a.png", [(0, 0, 255), (0, 255, 0)]), ("b.png", [(0, 255, 0), (0, 0, 255)])):
        im = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
        im.putpalette([v for c in order for v in c] + [0] * (768 - 6))
        im.save(tmp_path / name)
    a = table.decode_mask(read_mask(tmp_path / "a.png"))
    b = table.decode_mask(read_mask(tmp_path / "b.png"))
    assert a.tolist() == [[0, 1]] and b.tolist() == [[1, 0]]


def test_mask_png_round_trip(tmp_path, table):
    mask = np.array([[0, 1, 255]], np.uint8)
    write_mask_png(tmp_path / "m.png", mask, table.palette())
    assert np.array(Image.open(tmp_path / "m.png")).tolist() == [[0, 1, 255]]
    assert not list(tmp_path.glob("*.part*"))


def test_unwritable_output_leaves_nothing(tmp_path):
    with pytest.raises(EdgesegError, match="does not exist"):
        write_mask_png(tmp_path / "missing" / "m.png", np.zeros((2, 2), np.uint8))


def test_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(EdgesegError, match="unreadable"):
        read_image(bad)
    with pytest.raises(EdgesegError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_geotiff_16bit_bands_nodata_and_round_trip(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    data = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5) * 100
    data[:, 0, 0] = 0
    profile = dict(driver="GTiff", height=6, width=5, count=4, dtype="uint16", nodata=0,
                   crs="EPSG:32640", transform=from_origin(500000, 2800000, 0.5, 0.5))
    src = tmp_path / "scene.tif"
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    r = read_raster(src, bands=[3, 2, 1])
    assert r.array.shape == (6, 5, 3) and r.array.dtype == np.uint16
    assert (r.array[..., 0] == data[2]).all()
    assert r.valid is not None and not r.valid[0, 0] and r.valid[1, 1]
    with pytest.raises(EdgesegError, match="has 4 bands"):
        read_raster(src, bands=[5])
    out = tmp_path / "mask.tif"
    write_mask_geotiff(out, np.ones((6, 5), np.uint8), r.profile)
    with rasterio.open(out) as m:
        assert m.crs.to_epsg() == 32640
        assert m.transform == profile["transform"]
        assert (m.read(1) == 1).all()
