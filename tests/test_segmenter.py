"""Segmenter: MediaPipe parity with LiteRT, tiled vs whole image, three-backend parity,
quantised models, foreign-model options and bad input."""

import numpy as np
import pytest
from tiny_models import prob_atol, smooth_image

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime import tiling
from firmware_bridge.runtime.postprocess import resize_bilinear, to_probabilities
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions


@pytest.fixture(scope="module")
def image():
    return smooth_image(300, 420)


@pytest.mark.parametrize(("name", "size"), [("selfie_segmentation", (256, 256)),
                                            ("selfie_segmentation_landscape", (144, 256))])
def test_mediapipe_equals_direct_litert_call(shared_dir, name, size):
    from ai_edge_litert.interpreter import Interpreter

    path = shared_dir / "models" / "mediapipe_selfie_segmentation" / f"{name}.tflite"
    seg = Segmenter(path, options=SegmenterOptions(mean=[0.0], std=[255.0]))
    assert seg.meta.output == "sigmoid" and seg.class_names == ["background", "foreground"]
    assert seg.input_size == size and seg.tile == size
    img = smooth_image(*size, seed=5)
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], img[None].astype(np.float32) / 255.0)
    it.invoke()
    direct = it.get_tensor(it.get_output_details()[0]["index"])[0]
    result = seg.predict(img)
    np.testing.assert_array_equal(result.probabilities, direct)
    np.testing.assert_array_equal(result.mask, (direct[..., 0] >= 0.5).astype(np.uint8))
    tiled = seg.predict_tiled(img, probabilities=True)  # one tile: blending is the identity
    np.testing.assert_allclose(tiled.probabilities, direct, atol=1e-6)
    big = seg.predict_tiled(smooth_image(333, 517), probabilities=True)
    assert big.mask.shape == (333, 517) and big.probabilities.shape == (333, 517, 1)
    assert 0 <= big.probabilities.min() and big.probabilities.max() <= 1


def _border_band(height, width, boxes, d=8):
    """Pixels within ``d`` of a tile edge that lies inside the image."""
    band = np.zeros((height, width), bool)
    for b in boxes:
        for y in (b.y0, b.y1):
            if 0 < y < height:
                band[max(0, y - d) : y + d, b.x0 : b.x1] = True
        for x in (b.x0, b.x1):
            if 0 < x < width:
                band[b.y0 : b.y1, max(0, x - d) : x + d] = True
    return band


@pytest.mark.parametrize(("tile", "overlap"), [(96, 32), (128, 32), (128, 48)])
def test_tiled_agrees_with_whole_image(models, image, tile, overlap):
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=tile, overlap=overlap, batch=4))
    whole = seg.predict(image).mask  # dynamic input: the whole image in one pass
    tiled = seg.predict_tiled(image).mask
    differ = whole != tiled
    band = _border_band(*image.shape[:2], tiling.tile_boxes(*image.shape[:2], tile, overlap))
    assert 1 - differ.mean() >= 0.995
    assert differ[band].mean() <= 2 * differ[~band].mean()
    assert len(np.unique(whole)) == 4  # the model really separates four classes here


def test_blending_window_is_what_removes_seams(models, image):
    """Control: plain averaging (floor 1) leaves seams the tapering window does not."""
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=96, overlap=32, batch=8))
    h, w = image.shape[:2]
    boxes = tiling.tile_boxes(h, w, 96, 32)
    scores = list(seg.scores(np.stack([image[b.y0 : b.y1, b.x0 : b.x1] for b in boxes])))
    whole = seg.predict(image).mask
    band = _border_band(h, w, boxes)
    rates = {}
    for floor in (tiling.DEFAULT_FLOOR, 1.0):
        differ = seg.to_mask(tiling.merge_tiles(h, w, boxes, scores, floor=floor)) != whole
        rates[floor] = (differ[band].mean(), differ[~band].mean())
    np.testing.assert_array_equal(
        seg.to_mask(tiling.merge_tiles(h, w, boxes, scores)), seg.predict_tiled(image).mask)
    hann_border, _ = rates[tiling.DEFAULT_FLOOR]
    flat_border, flat_inner = rates[1.0]
    assert flat_border > 2 * flat_inner and flat_border > 3 * hann_border


def test_same_model_same_mask_on_three_backends(models, tflite, image):
    opts = SegmenterOptions(overlap=16, batch=4)
    segs = [Segmenter(tflite, options=opts), Segmenter(models["nchw"], options=opts),
            Segmenter(models["nchw_xml"], options=opts)]
    assert [s.backend.name for s in segs] == ["litert", "onnxruntime", "openvino"]
    assert all(s.tile == (64, 64) and s.meta.classes == ["c0", "c1", "c2", "c3"] for s in segs)
    results = [s.predict_tiled(image, probabilities=True) for s in segs]
    # three runtimes' kernels round differently, by up to prob_atol (1.1e-5 on this image);
    # bf16 inference or a wrong normalisation moves the probabilities by 1e-2 and more
    for other in results[1:]:
        assert (other.mask == results[0].mask).mean() >= 0.995
        np.testing.assert_allclose(other.probabilities, results[0].probabilities,
                                   atol=prob_atol(image, tiled=True))


def test_nhwc_and_nchw_models_agree(models, image):
    a = Segmenter(models["nchw"]).predict(image)
    b = Segmenter(models["nhwc"]).predict(image)
    assert Segmenter(models["nhwc"]).meta.layout == "NHWC"
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=prob_atol(image))  # rounding
    assert (a.mask == b.mask).mean() >= 0.9999


@pytest.mark.parametrize("key", ["uint8", "int8", "uint8_xml"])
def test_quantised_models_follow_the_float_model(models, image, key):
    ref = Segmenter(models["nchw"]).predict(image)
    seg = Segmenter(models[key])
    spec = seg.backend.input
    x = seg.preprocess(image[None])
    assert x.dtype == spec.dtype and x.shape == (1, 3, 300, 420)
    real = (image.astype(np.float32) - 127.5) / 127.5
    back = (x.astype(np.float32).transpose(0, 2, 3, 1)[0] - spec.zero_point) * spec.scale
    assert np.abs(back - real).max() <= spec.scale * 0.5 + 1e-6  # round to nearest
    out = seg.predict(image)
    assert np.abs(out.probabilities.sum(-1) - 1).max() <= 4 * seg.backend.output.scale
    assert np.abs(out.probabilities - ref.probabilities).max() < 0.05
    assert (out.mask == ref.mask).mean() >= 0.97


def test_foreign_model_defaults_and_overrides(models, image):
    seg = Segmenter(models["foreign"])
    assert seg.meta.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert seg.meta.output == "softmax" and seg.meta.layout == "NCHW" and seg.tile == (512, 512)
    np.testing.assert_array_equal(seg.predict(image).mask, Segmenter(models["nchw"]).predict(image).mask)
    shifted = Segmenter(models["foreign"], options=SegmenterOptions(mean=[100.0], std=[50.0]))
    assert (shifted.predict(image).mask != seg.predict(image).mask).mean() > 0.01
    with pytest.raises(EdgesegError, match="4 channel"):
        Segmenter(models["foreign"], options=SegmenterOptions(classes=["a", "b", "c"]))


def test_single_logit_channel_with_threshold(models, image):
    raw = Segmenter(models["logit1"], options=SegmenterOptions(output="sigmoid"))
    logit = raw.scores(image[None])[0, ..., 0]  # taken as-is: the raw logit
    seg = Segmenter(models["logit1"], options=SegmenterOptions(output="logits"))
    assert seg.num_classes == 2 and seg.single_channel
    np.testing.assert_array_equal(seg.predict(image).mask, (logit >= 0).astype(np.uint8))
    strict = Segmenter(models["logit1"], options=SegmenterOptions(output="logits", threshold=0.8))
    np.testing.assert_array_equal(strict.predict(image).mask,
                                  (logit >= np.log(0.8 / 0.2)).astype(np.uint8))


def test_batch_size_does_not_change_the_result(models, image):
    one = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16, batch=1))
    five = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16, batch=5))
    a, b = one.predict_tiled(image, True), five.predict_tiled(image, True)
    # batches of 1 and 5 tiles may run on other kernels: rounding alone (prob_atol)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=prob_atol(image, tiled=True))


def test_small_image_is_padded_and_cropped_back(models):
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16))
    img = smooth_image(40, 50)
    out = seg.predict_tiled(img, probabilities=True)
    padded = tiling.pad_to_tile(img, 64)
    np.testing.assert_allclose(out.probabilities, seg.predict(padded).probabilities[:40, :50],
                               atol=1e-6)


def test_bad_input_is_a_clear_error(models, image):
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16))
    with pytest.raises(EdgesegError, match="4 band.*takes 3"):
        seg.predict_tiled(np.zeros((80, 80, 4), np.uint8))
    with pytest.raises(EdgesegError, match="smaller than 16 px"):
        seg.predict_tiled(np.zeros((8, 80, 3), np.uint8))
    with pytest.raises(EdgesegError, match="HxWxC"):
        seg.predict_tiled(np.zeros((80, 80), np.uint8))
    with pytest.raises(EdgesegError, match="overlap"):
        Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=64))
    with pytest.raises(EdgesegError, match="mean needs 1 or 3 values"):
        Segmenter(models["nchw"], options=SegmenterOptions(mean=[1.0, 2.0]))
    with pytest.raises(EdgesegError, match="std must hold finite numbers above 0"):
        Segmenter(models["nchw"], options=SegmenterOptions(std=[0.0]))
    with pytest.raises(EdgesegError, match="batch"):
        Segmenter(models["nchw"], options=SegmenterOptions(batch=0))


def test_fixed_size_model_refuses_other_sizes(tflite):
    seg = Segmenter(tflite)
    with pytest.raises(EdgesegError, match="predict_tiled"):
        seg.predict(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(EdgesegError, match="fixed at"):
        Segmenter(tflite, options=SegmenterOptions(tile=128))


def test_postprocess_by_hand():
    logits = np.array([[[[0.0, np.log(3.0)]]]], np.float32)
    np.testing.assert_allclose(to_probabilities(logits, "logits")[0, 0, 0], [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(to_probabilities(np.zeros((1, 1, 1, 1), np.float32), "logits"), 0.5)
    with pytest.raises(EdgesegError):
        to_probabilities(logits, "argmax")
    small = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
    # half-pixel centres: outputs at 0.25 spacing clamp at the ends -> 0, .25, .75, 1
    np.testing.assert_allclose(resize_bilinear(small, 1, 4)[0, 0, :, 0], [0, 0.25, 0.75, 1])


def _tiny_keras_segmenter(tta=None):
    from tiny_models import metadata

    from edgeseg.tf_env import tf_keras
    from export.keras_backend import keras_segmenter

    _, keras = tf_keras()
    keras.utils.set_random_seed(2)
    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(8, 5, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.UpSampling2D(interpolation="bilinear")(x)
    out = keras.layers.Conv2D(4, 3, padding="same", activation="softmax")(x)
    return keras_segmenter(keras.Model(inp, out), metadata(layout="NHWC"), overlap=16, tta=tta)


@pytest.mark.parametrize("backend", ["litert", "onnxruntime", "openvino", "tensorflow"])
def test_tta_flips_average_the_mirrored_predictions(models, tflite, backend):
    """On every backend: the flips option gives the mean of the three predictions mirrored back
    (checked on one 64 px tile, where the mirrored image is the mirrored tile)."""
    image = smooth_image(64, 64, seed=21)
    if backend == "tensorflow":
        plain, tta = _tiny_keras_segmenter(), _tiny_keras_segmenter("flips")
    else:
        path = {"litert": tflite, "onnxruntime": models["nchw"], "openvino": models["nchw_xml"]}[backend]
        plain = Segmenter(path, options=SegmenterOptions(tile=64))
        tta = Segmenter(path, options=SegmenterOptions(tile=64, tta="flips"))
    assert plain.backend.name == backend
    views = [plain.predict(image).probabilities,
             plain.predict(np.ascontiguousarray(image[:, ::-1])).probabilities[:, ::-1],
             plain.predict(np.ascontiguousarray(image[::-1])).probabilities[::-1]]
    got = tta.predict_tiled(image, probabilities=True)
    # each view is the same call on the same input as the plain prediction, and the one 64 px
    # tile blends with weight 1: the same arithmetic on both sides, so the masks are equal too
    np.testing.assert_allclose(got.probabilities, sum(views) / 3, atol=1e-5)
    np.testing.assert_array_equal(got.mask, (sum(views) / 3).argmax(-1))
    assert not np.allclose(got.probabilities, views[0], atol=1e-4)  # the mirrors did change something


def test_tta_rejects_unknown_names():
    with pytest.raises(EdgesegError, match="tta must be one of"):
        SegmenterOptions(tta="rotations")
