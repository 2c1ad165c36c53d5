"""Per-image standardisation: the same normalisation in training, in memory, streamed and on a cluster."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions
from firmware_bridge.runtime.standardise import TARGET_STD, band_statistics

OPTIONS = SegmenterOptions(tile=64, overlap=16, threads=1)


def _scene(size: int = 300, seed: int = 0) -> np.ndarray:
    """An image with structure (smooth fields and edges), 8-bit, three bands."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + 3 * yy), np.cos(5 * yy - 2 * xx), np.sin(9 * xx * yy)], -1)
    noise = rng.normal(0, 0.15, (size, size, 3))
    return np.clip(110 + 60 * (base + noise), 1, 255).astype(np.uint8)


def test_band_statistics_leave_out_pixels_without_data_and_flat_bands():
    image = np.zeros((4, 4, 3), np.float32)
    image[..., 0] = [[1, 3, 1, 3]] * 4  # mean 2, std 1
    image[..., 1] = 7  # no spread: std 1, so the band maps to a constant
    image[..., 2] = np.arange(16).reshape(4, 4)
    invalid = np.zeros((4, 4), bool)
    invalid[:, 2:] = True  # columns 2-3 hold no data
    stats = band_statistics(image, invalid, scale=2.0)
    assert stats.mean == pytest.approx((4.0, 14.0, 2 * np.arange(16).reshape(4, 4)[:, :2].mean()))
    assert stats.std == pytest.approx((2.0, 1.0, 2 * np.arange(16).reshape(4, 4)[:, :2].std()))
    mean, std = stats.normalisation()
    assert std[0] == pytest.approx(2.0 / TARGET_STD)
    assert band_statistics(image, np.ones((4, 4), bool)) is None


def test_masks_of_a_standardised_model_ignore_a_gain_and_offset_per_band(models):
    image = _scene().astype(np.float32)
    shifted = image * np.float32([1.3, 0.7, 1.1]) + np.float32([-20, 35, 10])
    std_model = Segmenter(models["standardised"], options=OPTIONS)
    fixed = Segmenter(models["nchw"], options=OPTIONS)
    assert std_model.per_image and not fixed.per_image
    a, b = std_model.predict_tiled(image).mask, std_model.predict_tiled(shifted).mask
    assert (a == b).mean() >= 0.999  # float rounding only
    # the same weights with the fixed normalisation see another scene
    assert (fixed.predict_tiled(image).mask == fixed.predict_tiled(shifted).mask).mean() < 0.95
    # the normalisation is the image's own: the fixed model fed the standardised pixels agrees
    stats = std_model.image_statistics(image)
    m, s = stats.normalisation()
    as_fixed = (image - m) / s * 127.5 + 127.5
    assert (fixed.predict_tiled(as_fixed).mask == a).mean() >= 0.999


def test_streamed_and_cluster_masks_use_the_whole_scene_statistics(models, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    distributed = pytest.importorskip("distributed")
    from firmware_bridge.cluster import predict_many
    from firmware_bridge.io.raster import predict_geotiff

    size = 700
    image = _scene(size)
    image[300:340, 100:600] = 0  # no data (nodata 0): left out of the statistics
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 3, "dtype": "uint8",
               "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256}
    src = tmp_path / "scene.tif"
    with rasterio.open(src, "w", **profile) as out:
        out.write(np.moveaxis(image, -1, 0))
    seg = Segmenter(models["standardised"], options=OPTIONS)
    expected = seg.predict_tiled(image, nodata=0).mask
    # blocks of 128 px: each block's own statistics would differ from the scene's
    with rasterio.open(predict_geotiff(seg, src, tmp_path / "one.tif", block=128).mask) as ds:
        np.testing.assert_array_equal(ds.read(1), expected)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        report = predict_many(models["standardised"], [src], tmp_path / "many", client,
                              options=OPTIONS, block=128)
    assert not report.failed
    with rasterio.open(tmp_path / "many" / "scene_mask.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), expected)


def test_training_crops_are_standardised_as_the_device_standardises():
    from edgeseg.data.dataset import Sample
    from edgeseg.data.pipeline import Augment, CropSampler
    from edgeseg.training.config import TrainConfig
    from firmware_bridge.errors import EdgesegError

    image = _scene(200)
    mask = np.zeros((200, 200), np.uint8)
    brighter = np.clip(image.astype(np.int32) + 30, 0, 255).astype(np.uint8)
    crops = {}
    for name, pixels in (("image", image), ("brighter", brighter)):
        sampler = CropSampler([Sample(name, pixels, mask)], 2, 64, aug=Augment.off(),
                              standardise=True)
        crops[name] = sampler.draw(np.random.default_rng(0))[0]
    # the crop at the same place, normalised by the whole image's statistics
    stats = band_statistics(image)
    m, s = stats.normalisation()
    sampler = CropSampler([Sample("image", image, mask)], 2, 64, aug=Augment.off())
    plain = sampler.draw(np.random.default_rng(0))[0]  # (pixel - 127.5) / 127.5
    np.testing.assert_allclose(crops["image"], ((plain * 127.5 + 127.5) - m) / s, atol=1e-4)
    # a brighter pass of the same scene (few pixels clip) gives nearly the same input
    assert np.abs(crops["image"] - crops["brighter"]).mean() < 0.02
    config = TrainConfig(num_classes=2, standardise="image")
    assert config.spec().standardise == "image" and config.per_image
    with pytest.raises(EdgesegError, match="standardise"):
        TrainConfig(num_classes=2, standardise="scene")
