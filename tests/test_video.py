"""Video sources: masks equal ``predict`` on the same frames, fractions equal the masks', live drops."""

from __future__ import annotations

import csv
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import smooth_image

av = pytest.importorskip("av")

from firmware_bridge.cli import main  # noqa: E402
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions  # noqa: E402
from firmware_bridge.video import (  # noqa: E402
    VideoOptions,
    VideoSource,
    predict_video,
    segment_video,
)

OPTIONS = SegmenterOptions(tile=64, overlap=16)
H, W = 96, 128


def write_video(path: Path, frames: int, size=(H, W)) -> Path:
    """Frames of known content, losslessly (FFV1), so that decoding gives them back exactly."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=Fraction(10))
        stream.height, stream.width = size
        stream.pix_fmt = "bgr0"  # RGB: FFV1 stores it losslessly
        for i in range(frames):
            image = smooth_image(*size, seed=i % 7)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as src:
        return [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]


def decoded_masks(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as src:
        return [f.to_ndarray(format="gray") for f in src.decode(video=0)]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "flight.mkv", 12)


def test_masks_equal_predict_on_the_same_frames(models, video, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", str(models["nchw"]), str(video), "--out", str(out), "--mask-video",
                 "--overlay-video", "--png-every", "5", "--tile", "64", "--overlap", "16", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["flight_frames.csv", "flight_mask.mkv",
                                                     "flight_masks", "flight_overlay.mp4"]
    masks = decoded_masks(out / "flight_mask.mkv")
    frames = decoded_frames(video)
    assert len(masks) == len(frames) == 12
    stills = tmp_path / "stills"
    stills.mkdir()
    for k in (0, 5, 11):
        Image.fromarray(frames[k]).save(stills / f"f{k}.png")
    assert main(["predict", str(models["nchw"]), *[str(stills / f"f{k}.png") for k in (0, 5, 11)],
                 "--out", str(tmp_path / "png"), "--tile", "64", "--overlap", "16", "--quiet"]) == 0
    for k in (0, 5, 11):
        with Image.open(tmp_path / "png" / f"f{k}_mask.png") as im:
            np.testing.assert_array_equal(masks[k], np.asarray(im))
    assert sorted(p.name for p in (out / "flight_masks").iterdir()) == [
        "000000_mask.png", "000005_mask.png", "000010_mask.png"]
    with Image.open(out / "flight_masks" / "000005_mask.png") as im:
        np.testing.assert_array_equal(np.asarray(im), masks[5])
    with (out / "flight_frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frame"]) for r in rows] == list(range(12))
    assert all(r["status"] == "predicted" and float(r["inference_ms"]) > 0 for r in rows)
    for row, mask in zip(rows, masks, strict=True):
        own = np.bincount(mask.ravel(), minlength=4)[:4] / mask.size
        got = [float(row[f"fraction_c{i}"]) for i in range(4)]
        np.testing.assert_allclose(got, own, atol=1e-6)
    with av.open(str(out / "flight_overlay.mp4")) as ov:
        assert ov.streams.video[0].frames in (0, 12) and ov.streams.video[0].height == H


class SlowModel:
    """A model that takes longer per frame than the source's frame interval."""

    def __init__(self, seg: Segmenter, seconds: float) -> None:
        self.seg, self.seconds = seg, seconds

    def __getattr__(self, name):  # everything else is the real model's
        return getattr(self.seg, name)

    def predict_tiled(self, image):
        time.sleep(self.seconds)
        return self.seg.predict_tiled(image)


def test_a_live_source_drops_frames_with_bounded_memory(models, tmp_path):
    path = write_video(tmp_path / "long.mkv", 150)
    live = VideoSource(str(path), "stream", "long")  # decoded as fast as a live feed arrives
    model = SlowModel(Segmenter(models["nchw"], options=OPTIONS), 0.02)
    tracemalloc.start()
    results = list(segment_video(model, live))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    skipped = sum(len(r.skipped) for r in results)
    assert skipped > 0 and len(results) + skipped == 150
    seen = sorted([r.index for r in results] + [i for r in results for i in r.skipped])
    assert seen == list(range(150))
    frame_bytes = H * W * 3
    assert peak < 40 * frame_bytes  # 150 frames held would be 150 * frame_bytes and more


def test_a_live_source_says_which_frames_were_skipped(models, tmp_path):
    path = write_video(tmp_path / "cam.mkv", 40)
    live = VideoSource(str(path), "stream", "cam")
    model = SlowModel(Segmenter(models["nchw"], options=OPTIONS), 0.02)
    report = predict_video(model, live, tmp_path, VideoOptions())
    with (tmp_path / "cam_frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["frame"]) for r in rows) == list(range(40))
    assert sum(r["status"] == "skipped" for r in rows) == report.skipped > 0
    assert report.predicted + report.skipped == 40


def test_a_file_is_predicted_frame_by_frame(models, video):
    seg = Segmenter(models["nchw"], options=OPTIONS)
    results = list(segment_video(seg, str(video)))
    assert [r.index for r in results] == list(range(12)) and not any(r.skipped for r in results)
    frames = decoded_frames(video)
    np.testing.assert_array_equal(results[3].mask, seg.predict_tiled(frames[3]).mask)
    assert abs(results[3].time_s - 0.3) < 1e-6


def test_bad_sources_give_one_line_and_no_output(models, video, tmp_path, capsys):
    fake = tmp_path / "clip.mp4"
    fake.write_text("not a video")
    out = tmp_path / "out"
    assert main(["predict", str(models["nchw"]), str(fake), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "clip.mp4: not a readable video" in err and "Traceback" not in err
    assert list(out.iterdir()) == []
    assert main(["predict", str(models["nchw"]), str(tmp_path / "none.mkv"), "--out", str(out)]) == 1
    assert "none.mkv: no such file" in capsys.readouterr().err
    assert main(["predict", str(models["nchw"]), str(video), str(tmp_path / "a.png"), "--out",
                 str(out)]) == 2
    assert "separate runs" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_the_video_benchmark_runs(models):
    from firmware_bridge.video.bench import video_fps

    rows = video_fps(Segmenter(models["nchw"], options=OPTIONS), [64], frames=5)
    assert rows[0]["frames"] == 5 and rows[0]["fps"] > 0 and rows[0]["height"] == 64


def test_a_truncated_video_gives_one_line_and_no_output(models, tmp_path, capsys):
    from firmware_bridge.video.bench import generate_video

    whole = generate_video(tmp_path / "whole.mp4", 64, 10)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: it is gone
    out = tmp_path / "out"
    assert main(["predict", str(models["nchw"]), str(cut), "--out", str(out), "--quiet",
                 "--tile", "64", "--overlap", "16"]) == 1
    err = capsys.readouterr().err
    assert "cut.mp4: not a readable video" in err and "Traceback" not in err
    assert list(out.iterdir()) == []
