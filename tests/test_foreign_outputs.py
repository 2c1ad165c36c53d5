"""Other people's models: whole images resized to a fixed input, multilabel and logit outputs,
overlays in the image's own band order, RGBA images, and bench with every model option."""

import json

import numpy as np
import pytest
import tiny_models
from PIL import Image
from tiny_models import smooth_image

from firmware_bridge.bench import report_lines, stride_label
from firmware_bridge.cli import main
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.raster import class_table, predict_image
from firmware_bridge.runtime import resize, tiling
from firmware_bridge.runtime.metadata import ModelMetadata
from firmware_bridge.runtime.postprocess import resize_bilinear, softmax
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions
from firmware_bridge.serve import protocol as P
from firmware_bridge.serve.server import FrameHandler

FIXED = (32, 48)  # rows, columns of the fixed-size model
NORM = {"mean": [tiny_models.MEAN], "std": [tiny_models.STD]}
THRESHOLDS = [0.3, 0.5, 0.7]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Models without edgeseg metadata: fixed-size softmax, multilabel sigmoid and logits."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("foreign_outputs")
    models = {
        "fixed": tiny_models._onnx_model(tiny_models.weights(), size=FIXED),
        "fit_meta": tiny_models._onnx_model(
            tiny_models.weights(), size=FIXED,
            meta_json=ModelMetadata(classes=[f"c{i}" for i in range(4)], mean=NORM["mean"],
                                    std=NORM["std"], layout="NCHW", input_size=FIXED,
                                    resize="fit").to_json()),
        "multilabel": tiny_models._onnx_model(tiny_models.weights(k=3), output="sigmoid"),
        "multilabel_logits": tiny_models._onnx_model(tiny_models.weights(k=3), output="logits"),
        "logits": tiny_models._onnx_model(tiny_models.weights(), output="logits"),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(model, str(paths[name]))
    return paths


def test_fit_places_the_image_centred_with_its_aspect_ratio():
    # 50 x 70 into 32 x 48: one factor 0.64 -> 32 x 44.8, rounded to 45 columns, centred
    assert resize.placement(50, 70, FIXED, "fit") == tiling.Box(0, 1, 32, 46)
    assert resize.placement(20, 10, FIXED, "fit") == tiling.Box(0, 16, 32, 32)
    assert resize.placement(50, 70, FIXED, "stretch") == tiling.Box(0, 0, 32, 48)
    with pytest.raises(EdgesegError, match="fit or stretch"):
        resize.placement(50, 70, FIXED, "tile")


@pytest.mark.parametrize("mode", ["stretch", "fit"])
@pytest.mark.parametrize("shape", [(50, 70), (20, 30)])
def test_resize_equals_the_model_on_the_resized_frame_upsampled(foreign, mode, shape):
    image = smooth_image(*shape, seed=5)
    seg = Segmenter(foreign["fixed"], options=SegmenterOptions(resize=mode, **NORM))
    got = seg.predict_tiled(image, probabilities=True)
    # the reference, step by step: Pillow resizes each band into the frame, padded with the
    # model's zero (the mean), the model runs once on it, and its part of the scores goes
    # back to the image's size bilinearly before the argmax
    box = resize.placement(*shape, FIXED, mode)
    frame = np.full((*FIXED, 3), tiny_models.MEAN, np.float32)
    for c in range(3):
        band = Image.fromarray(image[..., c].astype(np.float32), mode="F")
        frame[box.y0 : box.y1, box.x0 : box.x1, c] = np.asarray(
            band.resize((box.width, box.height), Image.BILINEAR))
    direct = seg.predict(frame).probabilities[box.y0 : box.y1, box.x0 : box.x1]
    expected = resize_bilinear(direct[None], *shape)[0]
    np.testing.assert_array_equal(got.probabilities, expected)
    np.testing.assert_array_equal(got.mask, np.argmax(expected, axis=-1))
    assert len(np.unique(got.mask)) >= 3  # not a trivial, one-class answer
    assert np.array_equal(seg.predict_tiled(image).mask, got.mask)  # the mask-only path


def test_resize_modes_differ_and_metadata_recommends_one(foreign):
    image = smooth_image(60, 150, seed=8)
    masks = {mode: Segmenter(foreign["fixed"], options=SegmenterOptions(resize=mode, **NORM))
             .predict_tiled(image).mask for mode in ("tile", "fit", "stretch")}
    assert all(m.shape == (60, 150) for m in masks.values())
    assert (masks["fit"] != masks["stretch"]).mean() > 0.01
    assert (masks["tile"] != masks["fit"]).mean() > 0.01
    recommended = Segmenter(foreign["fit_meta"])
    assert recommended.resize == "fit"
    np.testing.assert_array_equal(recommended.predict_tiled(image).mask, masks["fit"])
    overridden = Segmenter(foreign["fit_meta"], options=SegmenterOptions(resize="tile"))
    assert overridden.resize == "tile"
    with pytest.raises(EdgesegError, match="--resize fit"):
        Segmenter(foreign["fixed"], options=SegmenterOptions(tile=64))


def test_upsampled_argmax_equals_interpolating_every_pixel():
    rng = np.random.default_rng(2)
    scores = resize_bilinear(rng.normal(0, 1, (1, 6, 9, 5)).astype(np.float32), 24, 36)[0]
    full = np.argmax(resize_bilinear(scores[None], 97, 131)[0], axis=-1)
    for argmax in (True, False):
        got = resize.upsample_mask(scores, 97, 131, lambda s: np.argmax(s, -1).astype(np.uint8),
                                   argmax, rows=16)
        np.testing.assert_array_equal(got, full)
    assert len(np.unique(full)) == 5


GRID = np.array([[10, 200, 30, 90], [250, 0, 120, 60], [5, 180, 220, 40], [100, 70, 255, 15]],
                np.uint8)
SMALL = np.array([[80, 212, 23], [232, 209, 53], [242, 70, 183]], np.uint8)


def test_bilinear_filter_is_opencvs_inter_linear_worked_by_hand():
    # 4 -> 3 pixels: position (d + 0.5) * 4 / 3 - 0.5 = 1/6, 3/2, 17/6, so pixels 0|1, 1|2, 2|3
    # weighted 5/6|1/6, 1/2|1/2, 1/6|5/6 on both axes; e.g. [0, 0] =
    # (10 * 5/6 + 200 / 6) * 5/6 + (250 * 5/6 + 0 / 6) / 6 = 625/9
    shrunk = [[625 / 9, 635 / 6, 235 / 3], [485 / 4, 130, 70], [3055 / 36, 675 / 4, 115 / 2]]
    np.testing.assert_allclose(resize.resize_linear(GRID[..., None].astype(np.float32), 3, 3)[..., 0],
                               shrunk, rtol=1e-6)
    # 8 bits in OpenCV's fixed point: weights in 1/2048 (341 and 1707 for 1/6 and 5/6), rows
    # mixed as (((341 * (r0 >> 4)) >> 16) + ((1707 * (r1 >> 4)) >> 16) + 2) >> 2; [2, 2]:
    # r0 = 220 * 341 + 40 * 1707 = 143300, r1 = 255 * 341 + 15 * 1707 = 112560,
    # (46 + 183 + 2) >> 2 = 57 where 57.5 would round to 58
    assert resize.resize_linear(GRID[..., None], 3, 3)[..., 0].tolist() == [
        [69, 106, 78], [121, 130, 70], [85, 169, 57]]
    # 3 -> 5 pixels: positions -0.2, 0.4, 1, 1.6, 2.2; those outside the image take its edge
    grown = [[80, 664 / 5, 212, 493 / 5, 23], [704 / 5, 844 / 5, 1054 / 5, 2633 / 25, 35],
             [232, 1114 / 5, 209, 577 / 5, 53], [238, 4826 / 25, 628 / 5, 3221 / 25, 131],
             [242, 866 / 5, 70, 689 / 5, 183]]
    np.testing.assert_allclose(resize.resize_linear(SMALL[..., None].astype(np.float32), 5, 5)[..., 0],
                               grown, rtol=1e-6)
    # 8 bits: [0, 3] is 98.6 but 98: row -0.2 mixes row 0 with itself, weights 410 and 1638, and
    # each product is truncated: r = 212 * 819 + 23 * 1229 = 201895,
    # (((410 * (r >> 4)) >> 16) + ((1638 * (r >> 4)) >> 16) + 2) >> 2 = (78 + 315 + 2) >> 2 = 98
    assert resize.resize_linear(SMALL[..., None], 5, 5)[..., 0].tolist() == [
        [80, 133, 212, 98, 23], [141, 169, 211, 105, 35], [232, 223, 209, 115, 53],
        [238, 193, 126, 129, 131], [242, 173, 70, 138, 183]]
    # resize_pixels: the same values, as float32 in the image's units
    got = resize.resize_pixels(np.repeat(SMALL[..., None], 3, -1), 5, 5, "bilinear")
    assert got.dtype == np.float32 and np.array_equal(got[..., 1], resize.resize_linear(
        SMALL[..., None], 5, 5)[..., 0])
    # nearest neighbour as INTER_NEAREST: floor(d * size / out), not half-pixel centres
    assert resize.nearest_index(3, 7).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert resize.nearest_index(7, 3).tolist() == [0, 2, 4]
    # in double, as OpenCV: 42 * (1 / (70 / 45)) = 26.999999999999996, where 42 * 45 / 70 = 27
    assert resize.nearest_index(45, 70)[40:44].tolist() == [25, 26, 26, 27]
    assert resize.resize_nearest(SMALL, 2, 5).tolist() == [[80, 80, 212, 212, 23],
                                                           [232, 232, 209, 209, 53]]


def test_bilinear_filter_and_nearest_equal_opencv_when_installed():
    cv2 = pytest.importorskip("cv2")  # not a dependency: checked where it is installed
    rng = np.random.default_rng(4)
    for _ in range(30):
        h, w, height, width = (int(v) for v in rng.integers(1, 300, 4))
        image = rng.integers(0, 256, (h, w, 3), np.uint8)
        assert np.array_equal(resize.resize_linear(image, height, width),
                              cv2.resize(image, (width, height))), (h, w, height, width)
        mask = rng.integers(0, 5, (h, w), np.uint8)
        assert np.array_equal(resize.resize_nearest(mask, height, width),
                              cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST))
    assert np.array_equal(resize.resize_linear(GRID[..., None], 512, 256)[..., 0],
                          cv2.resize(GRID, (256, 512)))


def _publisher_reference(seg: Segmenter, image: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV-style, step by step: INTER_LINEAR into the frame, the model once, its mask and
    scores of the image's part back by INTER_NEAREST (``cvFloor(d * (1. / (image / part)))``)."""
    h, w = image.shape[:2]
    box = resize.placement(h, w, seg.tile, mode)
    frame = np.empty((*seg.tile, image.shape[2]), np.float32)
    frame[...] = seg.fill_value()
    frame[box.y0 : box.y1, box.x0 : box.x1] = resize.resize_linear(image, box.height, box.width)
    direct = seg.predict(frame, probabilities=True)
    rows = (np.floor(np.arange(h) * (1.0 / (h / box.height))).astype(int) + box.y0)[:, None]
    cols = np.floor(np.arange(w) * (1.0 / (w / box.width))).astype(int) + box.x0
    return direct.mask[rows, cols], direct.probabilities[rows, cols]


@pytest.mark.parametrize("mode", ["stretch", "fit"])
def test_resize_back_mask_is_the_nearest_resized_mask_of_the_model(foreign, mode):
    image = smooth_image(50, 70, seed=5)
    seg = Segmenter(foreign["fixed"], options=SegmenterOptions(
        resize=mode, resize_filter="bilinear", resize_back="mask", **NORM))
    got = seg.predict_tiled(image, probabilities=True)
    mask, probs = _publisher_reference(seg, image, mode)
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_array_equal(got.probabilities, probs)
    np.testing.assert_array_equal(np.argmax(got.probabilities, -1), got.mask)
    assert len(np.unique(mask)) >= 3
    # the defaults: antialiased pixels, scores back before the argmax (as spelt out)
    default = Segmenter(foreign["fixed"], options=SegmenterOptions(resize=mode, **NORM))
    assert (default.options.resize_filter, default.options.resize_back) == ("antialias", "scores")
    spelt = Segmenter(foreign["fixed"], options=SegmenterOptions(
        resize=mode, resize_filter="antialias", resize_back="scores", **NORM))
    np.testing.assert_array_equal(spelt.predict_tiled(image).mask, default.predict_tiled(image).mask)
    assert (default.predict_tiled(image).mask != got.mask).any()
    # each choice alone changes the mask
    for alone in ({"resize_filter": "bilinear"}, {"resize_back": "mask"}):
        one = Segmenter(foreign["fixed"], options=SegmenterOptions(resize=mode, **alone, **NORM))
        assert (one.predict_tiled(image).mask != default.predict_tiled(image).mask).any(), alone


def test_resize_back_mask_of_a_multilabel_model(foreign):
    seg = Segmenter(foreign["multilabel"], options=SegmenterOptions(
        output="multilabel", class_thresholds=THRESHOLDS, tile=32, resize="stretch",
        resize_filter="bilinear", resize_back="mask", **NORM))
    image = smooth_image(45, 77, seed=4)
    mask, _ = _publisher_reference(seg, image, "stretch")
    np.testing.assert_array_equal(seg.predict_tiled(image).mask, mask)
    assert set(np.unique(mask)) >= {0, 1}


def test_resize_options_through_predict_validate_and_serve(foreign, tmp_path, capsys):
    image = smooth_image(50, 70, seed=5)
    seg = Segmenter(foreign["fixed"], options=SegmenterOptions(
        resize="stretch", resize_filter="bilinear", resize_back="mask", **NORM))
    expected = seg.predict_tiled(image).mask
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(image).save(data / "images" / "a.png")
    Image.fromarray(expected).save(data / "masks" / "a.png")
    norm = ["--mean", str(tiny_models.MEAN), "--std", str(tiny_models.STD)]
    flags = ["--resize", "stretch", "--resize-filter", "bilinear", "--resize-back", "mask", *norm]
    assert main(["predict", str(foreign["fixed"]), str(data / "images" / "a.png"), "--out",
                 str(tmp_path / "o"), "--quiet", *flags]) == 0
    with Image.open(tmp_path / "o" / "a_mask.png") as im:
        np.testing.assert_array_equal(np.asarray(im), expected)
    scores = {}
    for name, extra in (("publisher", flags), ("default", ["--resize", "stretch", *norm])):
        report = tmp_path / f"{name}.json"
        assert main(["validate", str(foreign["fixed"]), "--data", str(data), "--json",
                     str(report), "--quiet", *extra]) == 0
        scores[name] = json.loads(report.read_text())["pixel_accuracy"]
    assert scores["publisher"] == 1.0 and scores["default"] < 1.0
    from firmware_bridge.cli import build_parser
    from firmware_bridge.commands.modelargs import load_segmenter

    args = build_parser().parse_args(["serve", str(foreign["fixed"]), "--stdio", *flags])
    served = load_segmenter(args)
    request = P.encode_request(3, image)
    header = P.decode_request_header(request[: P.REQUEST_SIZE])
    answer = FrameHandler(served).reply(header, bytearray(request[P.REQUEST_SIZE :]))
    reply = P.decode_reply(P.decode_reply_header(answer[: P.REPLY_SIZE]), answer[P.REPLY_SIZE :])
    np.testing.assert_array_equal(reply.mask, expected)
    # tiles are not resized: the options are refused there rather than ignored
    assert main(["predict", str(foreign["fixed"]), str(data / "images" / "a.png"), "--out",
                 str(tmp_path / "t"), "--resize-back", "mask", *norm]) == 2
    assert "--resize fit or --resize stretch" in capsys.readouterr().err


def test_a_fixed_size_model_without_a_resize_says_it_tiles(foreign, tmp_path, capsys):
    Image.fromarray(smooth_image(40, 60)).save(tmp_path / "a.png")
    norm = ["--mean", "127.5", "--std", "127.5", "--bands", "1,2,3", "--classes", "a,b,c,d",
            "--output-kind", "softmax"]

    def line(model: str, *extra: str) -> str:
        assert main(["predict", str(foreign[model]), str(tmp_path / "a.png"), "--out",
                     str(tmp_path / "o"), "--quiet", *norm, *extra]) == 0
        return "\n".join(x for x in capsys.readouterr().err.splitlines() if "so assumed:" in x)

    assert line("fixed").endswith("fixed.onnx: not in the model's metadata and not given, so "
                                  "assumed: resize tile (--resize)")
    assert line("fixed", "--resize", "tile") == ""
    assert line("fixed", "--resize", "stretch") == ""
    assert line("logits", "--output-kind", "logits") == ""  # any size: tiles of its own choice


def _multilabel_reference(probs: np.ndarray, thresholds) -> np.ndarray:
    """Pixel by pixel: 0 when no class passes, else 1 + the passing class of highest score."""
    out = np.zeros(probs.shape[:2], np.uint8)
    for (y, x), _ in np.ndenumerate(out):
        passing = [(probs[y, x, c], -c) for c in range(probs.shape[2])
                   if probs[y, x, c] >= thresholds[c]]
        if passing:
            out[y, x] = 1 - max(passing)[1]
    return out


def test_multilabel_thresholds_background_and_overlaps(foreign):
    with pytest.raises(EdgesegError, match="multilabel") as err:
        Segmenter(foreign["multilabel"], options=SegmenterOptions(output="sigmoid"))
    assert "one foreground probability" not in str(err.value)
    seg = Segmenter(foreign["multilabel"], options=SegmenterOptions(
        output="multilabel", class_thresholds=THRESHOLDS, tile=64, overlap=16, **NORM))
    assert seg.class_names == ["none", "class_1", "class_2", "class_3"] and seg.num_classes == 4
    image = smooth_image(90, 120, seed=4)
    got = seg.predict_tiled(image, probabilities=True)
    probs = got.probabilities
    np.testing.assert_array_equal(got.mask, _multilabel_reference(probs, THRESHOLDS))
    passing = probs >= np.asarray(THRESHOLDS, np.float32)
    assert (got.mask == 0).any() and not passing[got.mask == 0].any()  # none where none passes
    several = passing.sum(-1) >= 2
    first = np.argmax(passing, axis=-1) + 1
    assert (several & (got.mask != first)).any()  # an overlap won by a later, higher class
    assert set(np.unique(got.mask)) == {0, 1, 2, 3}
    one = Segmenter(foreign["multilabel"], options=SegmenterOptions(
        output="multilabel", threshold=0.6, tile=64, overlap=16, **NORM))
    np.testing.assert_array_equal(one.predict_tiled(image).mask,
                                  _multilabel_reference(probs, [0.6] * 3))
    with pytest.raises(EdgesegError, match="2 thresholds for 3 classes"):
        Segmenter(foreign["multilabel"], options=SegmenterOptions(
            output="multilabel", class_thresholds=[0.3, 0.5]))
    with pytest.raises(EdgesegError, match="multilabel"):
        Segmenter(foreign["fixed"], options=SegmenterOptions(class_thresholds=[0.3, 0.5]))


def test_multilabel_logits_match_their_sigmoid_model(foreign):
    image = smooth_image(60, 80, seed=6)
    kw = {"class_thresholds": THRESHOLDS, "tile": 128, "overlap": 16, **NORM}  # one tile
    probs = Segmenter(foreign["multilabel"], options=SegmenterOptions(output="multilabel", **kw))
    logits = Segmenter(foreign["multilabel_logits"],
                       options=SegmenterOptions(output="multilabel-logits", **kw))
    a, b = probs.predict_tiled(image, True), logits.predict_tiled(image, True)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_multilabel_through_validate_serve_and_predict(foreign, tmp_path, capsys):
    seg = Segmenter(foreign["multilabel"], options=SegmenterOptions(
        output="multilabel", class_thresholds=THRESHOLDS, tile=64, overlap=16, **NORM))
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = smooth_image(90, 120, seed=4)
    predicted = seg.predict_tiled(image).mask
    truth = predicted.copy()
    truth[:30, :40] = 2  # a known error: everything there is class_2 in the truth
    Image.fromarray(image).save(root / "images" / "a.png")
    Image.fromarray(truth).save(root / "masks" / "a.png")
    opts = ["--output-kind", "multilabel", "--threshold", "0.3,0.5,0.7", "--tile", "64",
            "--overlap", "16", "--mean", "127.5", "--std", "127.5"]
    report = tmp_path / "scores.json"
    assert main(["validate", str(foreign["multilabel"]), "--data", str(root), "--json",
                 str(report), "--quiet", *opts]) == 0
    data = json.loads(report.read_text())
    assert list(data["per_class"]) == ["none", "class_1", "class_2", "class_3"]
    for c, name in enumerate(data["per_class"]):
        inter = np.count_nonzero((truth == c) & (predicted == c))
        union = np.count_nonzero((truth == c) | (predicted == c))
        assert data["per_class"][name]["iou"] == pytest.approx(inter / union, abs=1e-6)
    assert data["per_class"]["class_2"]["iou"] < 1 and data["per_class"]["class_3"]["iou"] < 1

    request = P.encode_request(7, image)
    header = P.decode_request_header(request[: P.REQUEST_SIZE])
    answer = FrameHandler(seg).reply(header, bytearray(request[P.REQUEST_SIZE :]))
    reply = P.decode_reply(P.decode_reply_header(answer[: P.REPLY_SIZE]), answer[P.REPLY_SIZE :])
    assert reply.header.num_classes == 4
    np.testing.assert_array_equal(reply.mask, predicted)
    np.testing.assert_allclose(reply.fractions, np.bincount(predicted.ravel(), minlength=4)
                               / predicted.size, rtol=1e-6)

    out = tmp_path / "out"
    assert main(["predict", str(foreign["multilabel"]), str(root / "images" / "a.png"),
                 "--out", str(out), "--quiet", *opts]) == 0
    with Image.open(out / "a_mask.png") as im:
        np.testing.assert_array_equal(np.asarray(im), predicted)
    capsys.readouterr()


def test_logits_blend_as_logits_then_softmax(foreign):
    image = smooth_image(100, 130, seed=9)
    kw = {"tile": 64, "overlap": 16, **NORM}
    seg = Segmenter(foreign["logits"], options=SegmenterOptions(output="logits", **kw))
    raw = Segmenter(foreign["logits"], options=SegmenterOptions(output="softmax", **kw))
    boxes = tiling.tile_boxes(100, 130, 64, 16)
    tile_logits = [raw.scores(image[None, b.y0 : b.y1, b.x0 : b.x1])[0] for b in boxes]
    blended = tiling.merge_tiles(100, 130, boxes, tile_logits)
    got = seg.predict_tiled(image, probabilities=True)
    np.testing.assert_array_equal(got.mask, np.argmax(blended, axis=-1))
    np.testing.assert_allclose(got.probabilities, softmax(blended), atol=1e-6)
    np.testing.assert_array_equal(seg.predict_tiled(image).mask, got.mask)
    # blending probabilities instead gives the same mask wherever one tile alone covers a
    # pixel, and another one somewhere in the overlaps
    once = tiling.covered_once(100, 64, 16)[:, None] & tiling.covered_once(130, 64, 16)[None]
    by_probs = tiling.merge_tiles(100, 130, boxes, [softmax(t) for t in tile_logits])
    np.testing.assert_array_equal(got.mask[once], np.argmax(by_probs, axis=-1)[once])
    assert not np.allclose(got.probabilities[~once], by_probs[~once], atol=1e-4)


def test_overlay_in_the_images_band_order_with_clear_background(models, tmp_path):
    image = smooth_image(70, 90, seed=12)
    image[..., 2] //= 3  # bands differ clearly, so a swapped order shows
    Image.fromarray(image).save(tmp_path / "photo.png")
    seg = Segmenter(models["foreign"], options=SegmenterOptions(tile=64, overlap=16))
    out = tmp_path / "out"
    out.mkdir()
    files = predict_image(seg, tmp_path / "photo.png", out, bands=[3, 2, 1],
                          with_overlay=True).files
    mask = seg.predict_tiled(np.ascontiguousarray(image[..., ::-1])).mask
    with Image.open(files[0]) as im:
        np.testing.assert_array_equal(np.asarray(im), mask)
    colours = np.asarray(class_table(seg).palette(), np.float32)[mask]
    tinted = (0.55 * image.astype(np.float32) + 0.45 * colours).clip(0, 255).astype(np.uint8)
    expected = np.where((mask == 0)[..., None], image, tinted)
    with Image.open(files[1]) as im:
        np.testing.assert_array_equal(np.asarray(im), expected)
    assert (mask == 0).any() and (mask != 0).any()
    own = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16))
    files = predict_image(own, tmp_path / "photo.png", out, with_overlay=True, stem="own").files
    own_mask = own.predict_tiled(image).mask
    with Image.open(files[1]) as im:  # a model with colours: class 0 in its colour too
        shown = np.asarray(im)
    assert (shown[own_mask == 0] != image[own_mask == 0]).any()


def test_rgba_image_drops_alpha_with_a_note(models, tmp_path, capsys):
    image = smooth_image(60, 80, seed=3)
    rgba = np.dstack([image, np.full((60, 80), 200, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    opts = ["--tile", "64", "--overlap", "16", "--quiet"]
    assert main(["predict", str(models["nchw"]), str(tmp_path / "rgba.png"), "--out",
                 str(tmp_path / "out"), *opts]) == 0
    err = capsys.readouterr().err
    assert err.count("alpha band dropped") == 1 and len(err.strip().splitlines()) == 1
    seg = Segmenter(models["nchw"], options=SegmenterOptions(tile=64, overlap=16))
    with Image.open(tmp_path / "out" / "rgba_mask.png") as im:
        np.testing.assert_array_equal(np.asarray(im), seg.predict_tiled(image).mask)
    assert main(["predict", str(models["nchw"]), str(tmp_path / "rgba.png"), "--out",
                 str(tmp_path / "out2"), "--bands", "1,2,3", *opts]) == 0
    assert "alpha" not in capsys.readouterr().err
    assert main(["predict", str(models["nchw"]), str(tmp_path / "rgba.png"), "--out",
                 str(tmp_path / "out3"), "--bands", "1,2,3,4", *opts]) == 1
    assert "4 band(s)" in capsys.readouterr().err


def test_bench_takes_the_model_options_of_predict(foreign, tmp_path, capsys):
    pytest.importorskip("rasterio")
    report = tmp_path / "bench.json"
    assert main(["bench", str(foreign["fixed"]), "--overlap", "8", "--runs", "2", "--size",
                 "96", "--bands", "3,2,1", "--mean", "127.5", "--std", "127.5", "--resize",
                 "tile", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["tile"] == [32, 48] and data["overlap"] == 8
    assert data["raster"]["tiles"] == 4 * 3  # rows 0,24,48,64 x columns 0,40,48
    out = capsys.readouterr().out
    assert "(24x40 px stride)" in out
    assert stride_label(64, 64, 16) == "48 px" and stride_label(64, 96, 16) == "48x80 px"
    assert "(48 px stride)" in report_lines({**data, "tile": [64, 64], "overlap": 16})[2]


def test_class_table_with_one_row_per_channel_validates_multilabel(foreign, tmp_path):
    seg = Segmenter(foreign["multilabel"], options=SegmenterOptions(
        output="multilabel", classes=["none", "a", "b", "c"], **NORM))
    assert seg.class_names == ["none", "a", "b", "c"] and seg.meta.classes == ["a", "b", "c"]
    named = Segmenter(foreign["multilabel"], options=SegmenterOptions(
        output="multilabel", classes=["a", "b", "c"], **NORM))
    assert named.class_names == ["none", "a", "b", "c"]
    assert ClassTable(named.class_names).num_classes == named.num_classes
    with pytest.raises(EdgesegError, match="3 multilabel channel"):
        Segmenter(foreign["multilabel"], options=SegmenterOptions(output="multilabel",
                                                                  classes=["a", "b"]))
