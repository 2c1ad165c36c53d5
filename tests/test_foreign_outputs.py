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
