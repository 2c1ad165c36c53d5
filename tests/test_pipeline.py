import numpy as np
import pytest

from edgeseg.data import Sample
from edgeseg.data.pipeline import (
    Augment,
    CropSampler,
    augment,
    balanced_class_probs,
    class_pixel_index,
    crop_window,
    normalise,
    zoom_size,
)
from firmware_bridge.errors import EdgesegError


def coded_sample(h=40, w=50, stem="s"):
    """Image whose red channel equals the mask (0..4): any misalignment shows."""
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 5, (h, w)).astype(np.uint8)
    image = np.stack([mask * 50, np.full_like(mask, 100), np.full_like(mask, 100)], -1).astype(np.uint8)
    return Sample(stem, image, mask)


def test_normalise_range():
    assert normalise(np.array([0, 127.5, 255])).tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize("cy,cx,expect", [(0, 0, (0, 0)), (20, 25, (12, 17)), (39, 49, (24, 34))])
def test_crop_window_shifts_inward(cy, cx, expect):
    assert crop_window(40, 50, 16, cy, cx) == expect


def test_augment_keeps_image_and_mask_aligned():
    s = coded_sample()
    aug = Augment(flips=True, rotate90=True, brightness=0.0, contrast=0.0, channel_gain=0.0, gamma=0.0)
    for seed in range(12):
        img, mask = augment(s.image[:32, :32], s.mask[:32, :32], np.random.default_rng(seed), aug)
        red = np.round(img[..., 0] * 127.5 + 127.5)
        np.testing.assert_array_equal(red, mask.astype(np.float32) * 50)


def test_brightness_contrast_bounds():
    img = np.full((8, 8, 3), 100, np.uint8)
    img[0, 0] = 200
    aug = Augment(flips=False, rotate90=False, brightness=0.1, contrast=0.2, channel_gain=0.0,
                  gamma=0.0)
    out, _ = augment(img, np.zeros((8, 8), np.uint8), np.random.default_rng(3), aug)
    pixels = out * 127.5 + 127.5
    mean = img.astype(np.float64).mean()
    rng = np.random.default_rng(3)
    rng.random(2), rng.integers(4)
    b, c = rng.uniform(-1, 1, 2)
    expect = (img[0, 0, 0] - mean) * (1 + 0.2 * c) + mean + 25.5 * b
    assert pixels[0, 0, 0] == pytest.approx(expect, abs=1e-3)


def test_gamma_and_channel_gain_by_hand():
    img = np.array([[[64, 128, 200]]], np.uint8)
    aug = Augment(flips=False, rotate90=False, brightness=0.0, contrast=0.0, channel_gain=0.1,
                  gamma=0.25)
    out, _ = augment(img, np.zeros((1, 1), np.uint8), np.random.default_rng(5), aug)
    rng = np.random.default_rng(5)
    rng.random(2), rng.integers(4), rng.uniform(-1, 1, 2)
    g, gains = rng.uniform(-1, 1), rng.uniform(-1, 1, 3)
    assert abs(g) > 0.05 and np.abs(gains).max() > 0.05  # the seed does jitter
    expect = 255.0 * (np.array([64, 128, 200]) / 255.0) ** (2.0 ** (0.25 * g)) * (1 + 0.1 * gains)
    np.testing.assert_allclose(out[0, 0] * 127.5 + 127.5, np.clip(expect, 0, 255), atol=1e-3)


def test_colour_strength_scales_the_jitter():
    assert Augment.with_colour(1.0) == Augment(True, True, 0.1, 0.2, 0.05, 0.1) == Augment()
    assert Augment.with_colour(2.5) == Augment(True, True, 0.25, 0.5, 0.125, 0.25)
    assert Augment.with_colour(0.0) == Augment(True, True, 0.0, 0.0, 0.0, 0.0)
    assert Augment.off() == Augment(False, False, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(EdgesegError, match=">= 0"):
        Augment.with_colour(-1.0)
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    out, _ = augment(img, np.zeros((16, 16), np.uint8), np.random.default_rng(1), Augment.off())
    np.testing.assert_allclose(out * 127.5 + 127.5, img, atol=1e-4)


def test_sampler_is_deterministic_per_seed_and_epoch():
    sampler = CropSampler([coded_sample(), coded_sample(60, 45, "t")], 5, 32, balance=0.5)
    a = list(sampler.epoch(seed=3, epoch=1, count=4))
    b = list(sampler.epoch(seed=3, epoch=1, count=4))
    c = list(sampler.epoch(seed=3, epoch=2, count=4))
    for (ia, ma), (ib, mb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    assert not all(np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c, strict=True))


def test_small_images_are_padded_with_ignore():
    s = coded_sample(20, 24)
    sampler = CropSampler([s], 5, 32, aug=Augment.off())
    img, mask = next(sampler.epoch(0, 0, 1))
    assert img.shape == (32, 32, 3) and mask.shape == (32, 32)
    np.testing.assert_array_equal(mask[:20, :24], s.mask)
    assert (mask[20:] == 255).all() and (mask[:, 24:] == 255).all()


def test_balanced_crops_favour_the_rare_class():
    mask = np.zeros((200, 200), np.uint8)
    mask[90:110, 90:110] = 1  # 1% of the pixels
    image = np.zeros((200, 200, 3), np.uint8)
    sample = Sample("r", image, mask)
    probs = balanced_class_probs(np.array([39600, 400]))
    # 1/sqrt(0.99) = 1.0050378, 1/sqrt(0.01) = 10
    assert probs == pytest.approx([1.0050378 / 11.0050378, 10 / 11.0050378], abs=1e-7)
    no_aug = Augment.off()
    plain = CropSampler([sample], 2, 32, balance=0.0, aug=no_aug)
    balanced = CropSampler([sample], 2, 32, balance=1.0, aug=no_aug)
    share = [np.mean([(m == 1).mean() for _, m in s.epoch(0, 0, 200)]) for s in (plain, balanced)]
    assert share[0] < 0.03
    assert share[1] > 0.15


def test_class_pixel_index_rows():
    s = coded_sample(10, 10)
    index = class_pixel_index([s], 5, per_image=1000)
    for c, rows in enumerate(index):
        assert len(rows) == (s.mask == c).sum()
        assert (s.mask[rows[:, 1], rows[:, 2]] == c).all()


def test_sampler_rejects_16_bit():
    s = Sample("x", np.zeros((8, 8, 3), np.uint16), np.zeros((8, 8), np.uint8))
    with pytest.raises(EdgesegError, match="8-bit RGB"):
        CropSampler([s], 2, 8)


def test_zoom_size_is_log_uniform_between_the_bounds():
    assert zoom_size(256, 0.25, 1.0) == 320 and zoom_size(256, 0.25, -1.0) == 205
    assert zoom_size(256, 0.25, 0.0) == 256 and zoom_size(256, 0.0, 0.7) == 256


def test_scale_jitter_keeps_image_and_mask_aligned():
    """Blocks of 8 px whose red channel codes the class: after zooming by up to 1.5x either way,
    every pixel whose 3x3 neighbourhood is one class still has that class's red value."""
    i, j = np.mgrid[:12, :12]
    blocks = (i + 2 * j) % 5  # every block differs from its four neighbours
    mask = np.kron(blocks, np.ones((8, 8), int)).astype(np.uint8)
    image = np.stack([mask * 50, np.full_like(mask, 100), np.full_like(mask, 100)], -1).astype(np.uint8)
    assert _zoomed_crops(image, mask, 0.0) == 0
    assert _zoomed_crops(image, mask, 0.5) > 4


def _zoomed_crops(image, mask, scale):
    aug = Augment(False, False, 0.0, 0.0, 0.0, 0.0, scale=scale)
    sampler = CropSampler([Sample("b", image, mask)], 5, 32, aug=aug)
    zoomed = 0
    for img, m in sampler.epoch(seed=0, epoch=0, count=16):
        assert img.shape == (32, 32, 3) and m.shape == (32, 32) and set(np.unique(m)) <= set(range(5))
        red = img[..., 0] * 127.5 + 127.5
        pad = np.pad(m, 1, mode="edge").astype(int)
        views = [pad[dy:dy + 32, dx:dx + 32] for dy in range(3) for dx in range(3)]
        inner = np.all([v == m for v in views], axis=0)
        np.testing.assert_allclose(red[inner], m[inner] * 50.0, atol=1.0)
        # a 32 px crop of 8 px blocks has 4-5 blocks across; zoomed out it has more, in it fewer
        edges = int((np.diff(m.astype(int), axis=1) != 0).any(axis=0).sum())
        zoomed += edges not in (3, 4)
    return zoomed
