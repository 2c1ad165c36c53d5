"""Bad and edge inputs, one row each: what a hostile but realistic user gives the commands.

Every row builds its input in a fresh folder, runs one command in-process (or one stream
through the frame server), and checks the exit code (or reply status), that the one-line
error names the file at fault and says what is wrong, and that nothing was left under
``--out`` (neither a temporary nor a final file) unless the row expects output. None of these
rows needs TensorFlow: every check happens before a model is trained or converted.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import (
    _onnx_model,
    metadata,
    smooth_image,
    tflite_bytes,
    tflite_kernel_offset,
    weights,
)

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.serve import protocol as P

rasterio = pytest.importorskip("rasterio")

CLASSES_CSV = "name,colour,ignore\nc0,#FF0000,0\nc1,#00FF00,0\nc2,#0000FF,0\nc3,#FFFF00,0\n"
VOID = "#9B9B9B"
EXTRA_VALUE_CSV = CLASSES_CSV.replace("c1,#00FF00,0", "c1,#00FF00,0,green")
"""A class table with a fourth value in one row, under the three-column header."""


# --- input builders --------------------------------------------------------------------------

def png(path: Path, h: int = 96, w: int = 96, seed: int = 3, mode: str | None = None) -> Path:
    image = smooth_image(h, w, seed=seed)
    im = Image.fromarray(image)
    if mode:
        im = im.convert(mode)
    im.save(path)
    return path


def tif(path: Path, data: np.ndarray, nodata=None) -> Path:
    """``HxWxC`` array as a (non-georeferenced) GeoTIFF."""
    h, w, c = data.shape
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype,
                       nodata=nodata, crs="EPSG:32640",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 2700000)) as ds:
        ds.write(np.moveaxis(data, -1, 0))
    return path


def nan_tif(path: Path, rows_without_data: int, h: int = 120, w: int = 150) -> Path:
    data = smooth_image(h, w, seed=5).astype(np.float32)
    data[:rows_without_data] = np.nan
    return tif(path, data)


def csv_file(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def dataset(root: Path, n: int = 2, mask_colour: str | None = None, size_of_mask=None,
            image_maker=None) -> Path:
    """images/ + masks/ with colour masks of the four classes (and a void stripe)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lut = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    for i in range(n):
        if image_maker:
            image_maker(root / "images", f"s{i}")
        else:
            png(root / "images" / f"s{i}.png", 80, 100, seed=i)
        h, w = size_of_mask or (80, 100)
        rgb = lut[np.random.default_rng(i).integers(0, 4, (h, w))]
        rgb[:5] = (155, 155, 155)
        if mask_colour:
            rgb[-3:, -3:] = [int(mask_colour[k : k + 2], 16) for k in (1, 3, 5)]
        Image.fromarray(rgb).save(root / "masks" / f"s{i}.png")
    return root


# --- outputs that cannot be written, video sources -------------------------------------------

FILE_SIZE_LIMIT = 200
"""Bytes a file may grow to in the rows run with ``disk="limit"``; past it a write fails (EFBIG)."""


def full_disk(out: Path, request) -> None:
    """Mount a 1 MB tmpfs on ``out`` (unmounted after the row) and fill it up with ``filler``.

    Every write of data there then fails with ENOSPC, and ``filler`` stands for the user's
    files that a failed command must leave alone. Skips the row where mounting is not allowed.
    """
    out.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs for a full disk here ({exc}); the rows with a file "
                    "size limit fail the same writes everywhere")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs for a full disk here ({done.stderr.strip()}); the "
                    "rows with a file size limit fail the same writes everywhere")

    def unmount() -> None:
        if subprocess.run(["umount", str(out)], capture_output=True, timeout=60).returncode:
            subprocess.run(["umount", "--lazy", str(out)], check=True, timeout=60)

    request.addfinalizer(unmount)
    with open(out / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:  # until ENOSPC
            fh.write(bytes(1 << 16))
    assert os.statvfs(out).f_bavail == 0


def _run_limited(argv: list[str]) -> tuple[int, str, str]:
    """``edgeseg-run argv`` in a child process whose files cannot grow past FILE_SIZE_LIMIT."""
    code = ("import resource, sys\n"
            "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({FILE_SIZE_LIMIT}, hard))\n"
            "from firmware_bridge.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout, done.stderr


def video(path: Path, frames: int = 6, codec: str = "ffv1", pix_fmt: str = "bgr0",
          container: str | None = None) -> Path:
    """A video of smooth frames (``frames=0``: a valid container with a stream, no frame)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=Fraction(10))
        stream.height, stream.width, stream.pix_fmt = 96, 128, pix_fmt
        out.start_encoding()
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(smooth_image(96, 128, seed=i), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def half_stream(d: Path) -> str:
    """Serve one request on 127.0.0.1: a 20-frame MPEG-TS announced whole, cut off halfway.

    The server thread answers at most one connection and waits for it 60 s at most; the
    stream is a live source to the command (an HTTP URL), whose server closes mid-stream.
    """
    data = video(d / "live.ts", 20, "mpeg2video", "yuv420p", "mpegts").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 60

    def serve_once() -> None:
        try:
            server.handle_request()
        finally:
            server.server_close()

    threading.Thread(target=serve_once, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/live.ts"


def video_predict(*extra: str, source: Callable[[Path], str | Path] | None = None) -> Callable:
    """A predict row on the video source that ``source`` makes (default ``{d}/clip.mkv``)."""
    def build(d: Path, models: dict, out: Path) -> list[str]:
        spec = source(d) if source else video(d / "clip.mkv")
        return ["predict", str(models["nchw"]), str(spec), *extra, "--out", str(out), "--quiet"]
    return build


def _masks_kept(d, out, stdout, err):
    assert (out / "clip_masks" / "notes.txt").read_text() == "mine"
    with Image.open(out / "clip_masks" / "000000_mask.png") as im:  # the old one replaced
        assert im.size == (128, 96)


def _file_kept(name: str, text: str) -> Callable:
    def check(d, out, stdout, err):
        assert (out / name).read_text() == text
    return check


def _frames_so_far(d, out, stdout, err):
    with (out / "stream_frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert any(r["status"] == "predicted" for r in rows)


# --- the table -------------------------------------------------------------------------------

@dataclass
class Case:
    """One bad input.

    Attributes:
        id: Test id.
        build: ``(folder, models, out) -> argv`` (or request bytes for ``cli="frame"``).
        code: Expected exit code (reply status for frames).
        error: Substring of the one-line error ('' when the row succeeds).
        names: Substring naming the file at fault in that line ('' when no file is at fault).
        cli: ``"run"`` (edgeseg-run), ``"edgeseg"`` or ``"frame"``.
        check: Extra check ``(folder, out, stdout, stderr_or_reply)`` for rows that succeed.
        keeps: File names allowed under ``--out`` afterwards.
        disk: ``"full"``: ``--out`` is a full tmpfs (:func:`full_disk`); ``"limit"``: the
            command runs in a child whose files cannot grow past ``FILE_SIZE_LIMIT`` bytes.
    """

    id: str
    build: Callable
    code: int
    error: str = ""
    names: str = ""
    cli: str = "run"
    check: Callable | None = None
    keeps: tuple[str, ...] = ()
    disk: str = ""


def predict(model: str = "nchw", *extra: str) -> Callable:
    """A predict row: ``extra`` may hold ``{d}`` for the row's folder."""
    def build(d: Path, models: dict, out: Path) -> list[str]:
        return ["predict", str(models[model]), *[e.format(d=d) for e in extra], "--out", str(out),
                "--quiet"]
    return build


def with_files(maker: Callable[[Path], object], build: Callable) -> Callable:
    def both(d: Path, models: dict, out: Path) -> list[str]:
        maker(d)
        return build(d, models, out)
    return both


def _mask(out: Path, name: str) -> np.ndarray:
    with rasterio.open(out / name) as ds:
        return ds.read(1)


def _all_nodata(d, out, stdout, err):
    mask = _mask(out, "nan_mask.tif")
    assert np.all(mask == IGNORE_INDEX)


def _half_nodata(d, out, stdout, err):
    mask = _mask(out, "half_mask.tif")
    assert np.all(mask[:60] == IGNORE_INDEX) and np.all(mask[60:] < 4)
    assert "60 rows" not in err and "50.0 %" in err


def _nodata_value(d, out, stdout, err):
    mask = _mask(out, "nd_mask.tif")
    assert np.all(mask[:10, :20] == IGNORE_INDEX) and np.all(mask[10:] < 4)


def _both_stems(d, out, stdout, err):
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg_mask.png", "a_png_mask.png"]


def _same_as_default(d, out, stdout, err):
    """(pixel * 0.5 - 63.75) / 63.75 is the model's own (pixel - 127.5) / 127.5."""
    from firmware_bridge.cli import main

    assert main(["predict", str(d / "model.onnx"), str(d / "a.png"), "--out", str(d / "ref"),
                 "--quiet"]) == 0
    with Image.open(out / "a_mask.png") as im, Image.open(d / "ref" / "a_mask.png") as ref:
        np.testing.assert_array_equal(np.asarray(im), np.asarray(ref))


def _validated(d, out, stdout, err):
    assert "mIoU" in stdout or "IoU" in stdout


def _nan_excluded(d, out, stdout, err):
    report = json.loads((out / "v.json").read_text())
    assert report["nodata_pixels"] == 2 * 20 * 100
    assert int(np.asarray(report["confusion_matrix"]).sum()) == 2 * (80 - 20) * 100


def _user_file_kept(d, out, stdout, err):
    assert (out / "config.json").read_text() == "{\"mine\": 1}"


def _meta_model(d: Path, **meta) -> Path:
    import onnx

    path = d / "meta.onnx"
    onnx.save(_onnx_model(weights(), meta_json=metadata(**meta).to_json()), str(path))
    return path


def _bad_meta_model(d: Path, **fields) -> Path:
    """An ONNX model whose metadata JSON holds ``fields`` (values no ModelMetadata accepts)."""
    import onnx

    meta = json.loads(metadata().to_json())
    meta.update(fields)
    path = d / "meta.onnx"
    onnx.save(_onnx_model(weights(), meta_json=json.dumps(meta)), str(path))
    return path


def _flip(offset: int, mask: int = 0x01) -> Callable[[bytes], bytes]:
    """Damage: one bit of the byte at ``offset`` (negative: from the end) flipped."""
    def damage(data: bytes) -> bytes:
        out = bytearray(data)
        out[offset] ^= mask
        return bytes(out)
    return damage


def _flip_kernel(data: bytes) -> bytes:
    """Damage: one bit flipped inside the convolution's weights."""
    return _flip(tflite_kernel_offset(data) + 5)(data)


def _flip_metadata(data: bytes) -> bytes:
    """Damage: one bit flipped inside the compressed metadata after the flatbuffer."""
    return _flip(data.index(b"edgeseg.json") + 40, 0x04)(data)


def _tflite(name: str, damage: Callable[[bytes], bytes] | None = None, edgeseg: bool = True,
            meta: dict | None = None, **model) -> Callable[[Path], Path]:
    """A maker of a tiny ``.tflite`` (no TensorFlow) named ``name``, damaged by ``damage``.

    ``edgeseg`` appends edgeseg metadata (with ``meta`` changed), as export does; without it
    the model is a foreign one. ``model`` goes to :func:`tiny_models.tflite_bytes`.
    """
    def make(d: Path) -> Path:
        import dataclasses

        from firmware_bridge.runtime.metadata import tflite_with_metadata

        data = tflite_bytes(**model)
        if edgeseg:
            data = tflite_with_metadata(
                data, dataclasses.replace(metadata(layout="NHWC"), **(meta or {})))
        path = d / name
        path.write_bytes(damage(data) if damage else data)
        return path
    return make


def _ctypes_library() -> str:
    """A shared library that loads everywhere ctypes does but is no LiteRT delegate."""
    import _ctypes

    if not getattr(_ctypes, "__file__", None):
        pytest.skip("_ctypes is built into this Python: no library file to point --delegate at")
    return _ctypes.__file__


def tflite_predict(maker: Callable[[Path], Path], *extra: str) -> Callable:
    """A predict row on the model that ``maker`` writes into the row's folder."""
    def build(d: Path, models: dict, out: Path) -> list[str]:
        return ["predict", str(maker(d)), A.format(d=d), *extra, "--out", str(out), "--quiet"]
    return build


def meta_predict(**fields) -> Callable:
    """A predict row on an ONNX model whose metadata holds ``fields``."""
    def build(d: Path, models: dict, out: Path) -> list[str]:
        return ["predict", str(_bad_meta_model(d, **fields)), A.format(d=d), "--out", str(out),
                "--quiet"]
    return build


def _frame(image: np.ndarray, **fields) -> bytes:
    data = P.encode_request(7, image)
    if not fields:
        return data
    head = dict(zip(P.REQUEST_FIELDS, P.REQUEST_STRUCT.unpack_from(data), strict=True))
    head.update(fields)
    return P.REQUEST_STRUCT.pack(*head.values()) + data[P.REQUEST_SIZE:]


def _nan_frame(rows: int) -> bytes:
    image = smooth_image(40, 50).astype(np.float32)
    image[:rows] = np.nan
    return _frame(image)


def _fractions_sum(expected: float) -> Callable:
    def check(d, out, stdout, reply):
        assert abs(float(reply.fractions.sum()) - expected) < 1e-6
        rows = int(round((1 - expected) * 40))
        assert np.all(reply.mask[:rows] == IGNORE_INDEX) and np.all(reply.mask[rows:] < 4)
    return check


A = "{d}/a.png"
CASES: list[Case] = [
    # pixels without data: never a class
    Case("nan-geotiff-all", with_files(lambda d: nan_tif(d / "nan.tif", 120),
                                       predict("nchw", "{d}/nan.tif")), 0, "no data", "nan.tif",
         check=_all_nodata, keeps=("nan_mask.tif",)),
    Case("nan-geotiff-half", with_files(lambda d: nan_tif(d / "half.tif", 60),
                                        predict("int8", "{d}/half.tif")), 0, "no data", "half.tif",
         check=_half_nodata, keeps=("half_mask.tif",)),
    Case("nodata-value", with_files(
        lambda d: tif(d / "nd.tif", np.where(np.arange(120)[:, None, None] < 10,
                                             np.where(np.arange(150)[None, :, None] < 20, 0, 9),
                                             smooth_image(120, 150)).astype(np.uint8), nodata=0),
        predict("nchw", "{d}/nd.tif")), 0, "no data", "nd.tif", check=_nodata_value,
        keeps=("nd_mask.tif",)),
    # outputs never overwrite each other
    Case("same-stem", with_files(lambda d: (png(d / "a.png"), png(d / "a.jpg")),
                                 predict("nchw", A, "{d}/a.jpg")), 0, check=_both_stems,
         keeps=("a_png_mask.png", "a_jpg_mask.png")),
    Case("same-name-two-folders", with_files(
        lambda d: ((d / "x").mkdir(), (d / "y").mkdir(), png(d / "x" / "a.png"), png(d / "y" / "a.png")),
        predict("nchw", "{d}/x/a.png", "{d}/y/a.png")), 2, "same mask", "a.png"),
    Case("input-twice", with_files(lambda d: png(d / "a.png"), predict("nchw", A, A)), 2,
         "same mask", "a.png"),
    # one-channel models and their classes
    Case("sigmoid-five-names", with_files(lambda d: png(d / "a.png"),
                                          predict("logit1", A, "--classes", "a,b,c,d,e")),
         2, "one foreground probability", "logit1.onnx"),
    Case("sigmoid-five-class-csv", lambda d, m, o: (
        dataset(d / "data"), csv_file(d / "five.csv", CLASSES_CSV + "c4,#00FFFF,0\n"),
        ["validate", str(m["logit1"]), "--data", str(d / "data"), "--classes", str(d / "five.csv"),
         "--quiet"])[-1], 2, "one foreground probability", "logit1.onnx"),
    Case("sigmoid-two-names", with_files(lambda d: png(d / "a.png"),
                                         predict("logit1", A, "--classes", "land,water")),
         0, keeps=("a_mask.png",)),
    # option ranges
    Case("threshold-2", with_files(lambda d: png(d / "a.png"), predict("logit1", A, "--threshold", "2")),
         2, "threshold must lie between 0 and 1"),
    Case("threshold-negative", with_files(lambda d: png(d / "a.png"),
                                          predict("logit1", A, "--threshold=-1")), 2, "threshold"),
    Case("tile-0", predict("nchw", A, "--tile", "0"), 2, "--tile: '0' is not a positive integer"),
    Case("tile-negative", predict("nchw", A, "--tile=-64"), 2, "--tile: '-64' is not a positive"),
    Case("threads-0", predict("nchw", A, "--threads", "0"), 2, "--threads: '0' is not a positive"),
    Case("batch-0", predict("nchw", A, "--batch", "0"), 2, "--batch"),
    Case("block-0", predict("nchw", A, "--block", "0"), 2, "--block"),
    Case("overlap-negative", predict("nchw", A, "--overlap=-1"), 2, "--overlap"),
    Case("overlap-tile", with_files(lambda d: png(d / "a.png"), predict("nchw", A, "--overlap", "64")),
         2, "overlap must be in [0, 64)"),
    Case("scale-0", predict("nchw", A, "--scale", "0"), 2, "--scale: '0' is not a positive number"),
    Case("mean-nan", predict("nchw", A, "--mean", "nan"), 2, "--mean: 'nan' is not a finite number"),
    Case("mean-inf-one-band", predict("nchw", A, "--mean", "1,inf,3"), 2,
         "--mean: '1,inf,3' holds inf, not a finite number"),
    Case("std-inf", predict("nchw", A, "--std", "inf"), 2, "--std: 'inf' is not a finite number above 0"),
    Case("std-0", predict("nchw", A, "--std", "0"), 2, "--std: '0' is not a finite number above 0"),
    Case("std-negative", predict("nchw", A, "--std=-1"), 2, "--std: '-1' is not a finite number above 0"),
    Case("std-nan-validate", lambda d, m, o: ["validate", str(m["nchw"]), "--data", str(d), "--std", "nan"],
         2, "--std: 'nan' is not a finite number above 0"),
    Case("mean-inf-bench", lambda d, m, o: ["bench", str(m["nchw"]), "--mean", "inf"], 2,
         "--mean: 'inf' is not a finite number"),
    Case("std-0-serve", lambda d, m, o: ["serve", str(m["nchw"]), "--stdio", "--std", "0"], 2,
         "--std: '0' is not a finite number above 0"),
    Case("metadata-mean-nan", meta_predict(mean=[float("nan")]), 2,
         "invalid edgeseg metadata: mean must hold finite numbers, got [nan]", "meta.onnx"),
    Case("metadata-std-0", meta_predict(std=[0.0]), 2,
         "invalid edgeseg metadata: std must hold finite numbers above 0, got [0.0]", "meta.onnx"),
    Case("metadata-std-inf-validate", lambda d, m, o: (
        dataset(d / "data"),
        ["validate", str(_bad_meta_model(d, std=[float("inf")])), "--data", str(d / "data"),
         "--quiet"])[-1], 2, "std must hold finite numbers above 0, got [inf]", "meta.onnx"),
    Case("metadata-mean-not-a-list", meta_predict(mean="127.5"), 2,
         "mean must be a list of numbers", "meta.onnx"),
    Case("scale-then-standardise", predict("nchw", A, "--scale", "0.5", "--mean", "63.75", "--std", "63.75"),
         0, check=_same_as_default, keeps=("a_mask.png",)),
    # layouts
    Case("layout-lower-case", with_files(lambda d: png(d / "a.png"), predict("nchw", A, "--layout", "nchw")),
         0, keeps=("a_mask.png",)),
    Case("layout-wrong-dynamic", with_files(lambda d: png(d / "a.png"),
                                            predict("nchw", A, "--layout", "NHWC")),
         2, "is NCHW, not NHWC", "nchw.onnx"),
    Case("layout-wrong-nhwc", with_files(lambda d: png(d / "a.png"), predict("nhwc", A, "--layout", "NCHW")),
         2, "is NHWC, not NCHW", "nhwc.onnx"),
    Case("layout-unknown", predict("nchw", A, "--layout", "HWC"), 2, "--layout"),
    # images
    Case("one-band-png", with_files(lambda d: png(d / "g.png", mode="L"), predict("nchw", "{d}/g.png")),
         1, "1 band(s), the model takes 3", "g.png"),
    Case("grey-alpha-png", with_files(lambda d: png(d / "la.png", mode="LA"), predict("nchw", "{d}/la.png")),
         1, "2 band(s), the model takes 3", "la.png"),
    Case("rgba-png", with_files(lambda d: png(d / "rgba.png", mode="RGBA"), predict("nchw", "{d}/rgba.png")),
         0, "alpha band dropped", "rgba.png", keeps=("rgba_mask.png",)),
    Case("rgba-png-all-bands", with_files(lambda d: png(d / "rgba.png", mode="RGBA"),
                                          predict("nchw", "{d}/rgba.png", "--bands", "1,2,3,4")),
         1, "4 band(s)", "rgba.png"),
    Case("too-small", with_files(lambda d: png(d / "small.png", 8, 8), predict("nchw", "{d}/small.png")),
         1, "smaller than 16 px", "small.png"),
    Case("too-small-geotiff", with_files(lambda d: tif(d / "s.tif", smooth_image(10, 200)),
                                         predict("nchw", "{d}/s.tif")), 1, "smaller than", "s.tif"),
    Case("truncated-png", with_files(
        lambda d: (png(d / "full.png", 200, 200),
                   (d / "t.png").write_bytes((d / "full.png").read_bytes()[:400])),
        predict("nchw", "{d}/t.png")), 1, "unreadable", "t.png"),
    Case("zero-byte-png", with_files(lambda d: (d / "z.png").write_bytes(b""), predict("nchw", "{d}/z.png")),
         1, "unreadable", "z.png"),
    Case("text-named-png", with_files(lambda d: (d / "n.png").write_text("hello"),
                                      predict("nchw", "{d}/n.png")),
         1, "unreadable", "n.png"),
    Case("truncated-geotiff", with_files(
        lambda d: (tif(d / "f.tif", smooth_image(600, 600)),
                   (d / "t.tif").write_bytes((d / "f.tif").read_bytes()[:5000])),
        predict("nchw", "{d}/t.tif")), 1, "t.tif", "t.tif"),
    Case("missing-input", predict("nchw", "{d}/none.png"), 1, "no such file", "none.png"),
    Case("decompression-bomb", with_files(lambda d: Image.new("1", (9000, 9000)).save(d / "bomb.png"),
                                          predict("nchw", "{d}/bomb.png")), 1, "too large", "bomb.png"),
    Case("band-out-of-range", with_files(lambda d: png(d / "a.png"), predict("nchw", A, "--bands", "1,2,5")),
         1, "cannot select band(s) [5]", "a.png"),
    Case("two-bands-selected", with_files(lambda d: png(d / "a.png"), predict("nchw", A, "--bands", "1,2")),
         1, "2 band(s), the model takes 3", "a.png"),
    Case("bands-not-numbers", predict("nchw", A, "--bands", "r,g,b"), 2, "--bands"),
    # models
    Case("truncated-model", lambda d, m, o: (
        (d / "t.onnx").write_bytes(m["nchw"].read_bytes()[:300]),
        ["predict", str(d / "t.onnx"), A.format(d=d), "--out", str(o)])[-1], 2, "not a loadable", "t.onnx"),
    Case("zero-byte-model", lambda d, m, o: (
        (d / "z.tflite").write_bytes(b""),
        ["predict", str(d / "z.tflite"), A.format(d=d), "--out", str(o)])[-1], 2, "z.tflite", "z.tflite"),
    Case("model-unknown-suffix", lambda d, m, o: (
        (d / "m.pt").write_bytes(b"x"), ["predict", str(d / "m.pt"), A.format(d=d), "--out", str(o)])[-1],
        2, "m.pt", "m.pt"),
    Case("missing-model", lambda d, m, o: ["predict", str(d / "no.onnx"), A.format(d=d), "--out", str(o)],
         2, "no.onnx", "no.onnx"),
    Case("unknown-backend", predict("nchw", A, "--backend", "tensorrt"), 2, "tensorrt"),
    # the cluster path: refused before a model loads or a connection is tried
    Case("cluster-workers-10000", with_files(lambda d: tif(d / "s.tif", smooth_image(120, 150)),
                                             predict("nchw", "{d}/s.tif", "--workers", "10000")),
         2, "more than", "--workers 10000"),
    Case("cluster-scheduler-not-an-address", with_files(
        lambda d: tif(d / "s.tif", smooth_image(120, 150)),
        predict("nchw", "{d}/s.tif", "--scheduler", "not an address")),
        2, "is not a Dask scheduler address", "'not an address'"),
    Case("cluster-scheduler-empty", with_files(lambda d: tif(d / "s.tif", smooth_image(120, 150)),
                                               predict("nchw", "{d}/s.tif", "--scheduler", "")),
         2, "the scheduler address is empty"),
    Case("cluster-connect-timeout-0", predict("nchw", "{d}/s.tif", "--scheduler", "tcp://127.0.0.1:1",
                                              "--connect-timeout", "0"),
         2, "--connect-timeout: '0' is not a positive number"),
    # a damaged .tflite is refused before it runs
    Case("tflite-header-flipped", tflite_predict(_tflite("h.tflite", _flip(5, 0xFF))), 2,
         "no 'TFL3' file identifier", "h.tflite"),
    Case("tflite-root-offset-flipped-foreign",
         tflite_predict(_tflite("r.tflite", _flip(0, 0x80), edgeseg=False)), 2,
         "not a loadable TFLite model (The model is not a valid Flatbuffer buffer", "r.tflite"),
    Case("tflite-root-offset-flipped", tflite_predict(_tflite("r.tflite", _flip(0, 0x80))), 2,
         "do not match the SHA-256 recorded at export", "r.tflite"),
    Case("tflite-weight-flipped", tflite_predict(_tflite("w.tflite", _flip_kernel)), 2,
         "do not match the SHA-256 recorded at export", "w.tflite"),
    Case("tflite-metadata-flipped", tflite_predict(_tflite("m.tflite", _flip_metadata)), 2,
         "the edgeseg metadata at the end of the file is damaged", "m.tflite"),
    Case("tflite-archive-tail-flipped", tflite_predict(_tflite("z.tflite", _flip(-30))), 2,
         "the edgeseg metadata at the end of the file is damaged", "z.tflite"),
    Case("tflite-scale-nan", tflite_predict(_tflite("q.tflite", edgeseg=False, quant=True,
                                                    input_scale=float("nan"))), 2,
         "tensor 'x_uint8' has quantisation scale nan", "q.tflite"),
    Case("tflite-scale-0", tflite_predict(_tflite("q.tflite", quant=True, input_scale=0.0)), 2,
         "tensor 'x_uint8' has quantisation scale 0.0", "q.tflite"),
    Case("tflite-zero-point-outside-uint8",
         tflite_predict(_tflite("q.tflite", edgeseg=False, quant=True, input_zero_point=300)), 2,
         "zero point 300 outside the uint8 range [0, 255]", "q.tflite"),
    Case("tflite-metadata-other-input-size",
         tflite_predict(_tflite("s.tflite", meta={"input_size": (128, 128)})), 2,
         "the model's input is 64x64 but its metadata says 128x128", "s.tflite"),
    Case("tflite-metadata-other-bands", tflite_predict(_tflite("b.tflite", meta={"channels": 4})), 2,
         "the model takes 3 band(s) but its metadata says 4", "b.tflite"),
    Case("tflite-uint8-intact", with_files(lambda d: png(d / "a.png"), tflite_predict(
        _tflite("u.tflite", quant=True))), 0, keeps=("a_mask.png",)),
    Case("delegate-missing", with_files(lambda d: png(d / "a.png"), tflite_predict(
        _tflite("t.tflite"), "--delegate", "/nope/libx.so")), 2,
         "cannot load the LiteRT delegate '/nope/libx.so'", "/nope/libx.so"),
    Case("delegate-not-a-delegate", lambda d, m, o: tflite_predict(
        _tflite("t.tflite"), "--delegate", _ctypes_library())(d, m, o), 2,
         "is not a LiteRT delegate library (it has no tflite_plugin_create_delegate)", "_ctypes"),
    # --out
    Case("out-is-a-file", lambda d, m, o: (
        png(d / "a.png"), o.write_text("x"), ["predict", str(m["nchw"]), A.format(d=d), "--out", str(o)])[-1],
        2, "not a folder", "out"),
    Case("out-read-only", lambda d, m, o: (
        png(d / "a.png"), o.mkdir(), o.chmod(0o500),
        ["predict", str(m["nchw"]), A.format(d=d), "--out", str(o), "--quiet"])[-1],
        1, "not writable", "out"),
    Case("out-has-older-results", lambda d, m, o: (
        png(d / "a.png"), o.mkdir(), (o / "a_mask.png").write_bytes(b"old"),
        (o / ".a_mask.abc123.part.png").write_bytes(b"left by a killed run"),
        ["predict", str(m["nchw"]), A.format(d=d), "--out", str(o), "--quiet"])[-1],
        0, keeps=("a_mask.png",)),
    # class tables
    Case("csv-latin-1", with_files(
        lambda d: csv_file(d / "c.csv", "name,colour,ignore\nCafé,#FF0000,0\n", "latin-1"),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "not a UTF-8 text file", "c.csv"),
    Case("csv-binary", with_files(lambda d: csv_file(d / "c.csv", b"\x89PNG\r\n\x1a\n\x00\x00"),
                                  predict("nchw", A, "--classes", "{d}/c.csv")), 2, "c.csv", "c.csv"),
    Case("csv-duplicate-name", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", CLASSES_CSV.replace("c3,", "c0,"))),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "c0 is named twice", "c.csv"),
    Case("csv-duplicate-colour", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", CLASSES_CSV.replace("#FFFF00", "#FF0000"))),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "colour #FF0000 is listed twice", "c.csv"),
    Case("csv-ignore-maybe", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", CLASSES_CSV + "void,#9B9B9B,maybe\n")),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "ignore must be 0 or 1", "c.csv:6"),
    Case("csv-no-class", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", "name,colour,ignore\nvoid,#9B9B9B,1\n")),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "at least one class", "c.csv"),
    Case("csv-bad-header", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", "class,rgb\nc0,#FF0000\n")),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "header must be", "c.csv"),
    Case("csv-bad-colour", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", CLASSES_CSV.replace("#FFFF00", "yellow"))),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "not a colour", "c.csv:5"),
    Case("csv-missing", predict("nchw", A, "--classes", "{d}/none.csv"), 2, "not found", "none.csv"),
    Case("csv-with-bom", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", "\ufeff" + CLASSES_CSV)),
        predict("nchw", A, "--classes", "{d}/c.csv")), 0, keeps=("a_mask.png",)),
    Case("csv-extra-column-in-a-row", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", EXTRA_VALUE_CSV)),
        predict("nchw", A, "--classes", "{d}/c.csv")), 2, "4 values but the header has 3 columns", "c.csv:3"),
    Case("csv-extra-column-in-a-row-data-check", lambda d, m, o: (
        dataset(d / "data"),
        csv_file(d / "c.csv", EXTRA_VALUE_CSV + f"void,{VOID},1\n"),
        ["data", "check", str(d / "data"), "--classes", str(d / "c.csv")])[-1],
        2, "4 values but the header has 3 columns", "c.csv:3", cli="edgeseg"),
    Case("csv-extra-header-column-data-check", lambda d, m, o: (
        dataset(d / "data"), csv_file(d / "c.csv", "name,colour,ignore,note\nc0,#FF0000,0,red\n"),
        ["data", "check", str(d / "data"), "--classes", str(d / "c.csv")])[-1],
        2, "the header must be 'name,colour,ignore'", "c.csv", cli="edgeseg"),
    Case("csv-us-spelling", with_files(
        lambda d: (png(d / "a.png"), csv_file(d / "c.csv", CLASSES_CSV.replace("colour", "color"))),
        predict("nchw", A, "--classes", "{d}/c.csv")), 0, keeps=("a_mask.png",)),
    Case("names-empty", predict("nchw", A, "--classes", ","), 2, "--classes"),
    Case("names-duplicate", predict("nchw", A, "--classes", "a,a,b,c"), 2, "a named twice"),
    Case("names-too-few", with_files(lambda d: png(d / "a.png"), predict("nchw", A, "--classes", "a,b,c")),
         2, "outputs 4 channel(s) but 3 class(es)", "nchw.onnx"),
    # bench
    Case("bench-json-is-folder", lambda d, m, o: (
        o.mkdir(), ["bench", str(m["nchw"]), "--json", str(o), "--runs", "1", "--size", "64"])[-1],
        2, "is a folder; give a file name", "out"),
    Case("bench-json-no-folder", lambda d, m, o: [
        "bench", str(m["nchw"]), "--json", str(o / "x" / "b.json"), "--runs", "1"],
        2, "does not exist", "b.json"),
    # validate
    Case("validate-json-is-folder", lambda d, m, o: (
        dataset(d / "data"), o.mkdir(),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--json", str(o), "--quiet"])[-1],
        2, "is a folder", "--json"),
    Case("validate-json-no-folder", lambda d, m, o: (
        dataset(d / "data"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--json", str(o / "x" / "v.json")])[-1],
        2, "does not exist", "v.json"),
    Case("validate-no-masks-folder", lambda d, m, o: (
        (d / "data" / "images").mkdir(parents=True),
        ["validate", str(m["nchw"]), "--data", str(d / "data")])[-1], 2, "no 'masks/' folder", "data"),
    Case("validate-missing-partner", lambda d, m, o: (
        dataset(d / "data"), png(d / "data" / "images" / "lonely.png"), o.mkdir(),
        csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--quiet", "--json", str(o / "v.json")])[-1],
        1, "no mask with this stem", "lonely.png", keeps=("v.json",)),
    Case("validate-unknown-colour", lambda d, m, o: (
        dataset(d / "data", mask_colour="#123456"), csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--quiet"])[-1], 2, "colour #123456 (9 pixels) is not in the class table", "s0.png"),
    Case("validate-size-mismatch", lambda d, m, o: (
        dataset(d / "data", size_of_mask=(80, 90)), csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--quiet"])[-1], 2, "mask is (90, 80) but the image is (100, 80)", "s0.png"),
    Case("validate-band-count", lambda d, m, o: (
        dataset(d / "data", image_maker=lambda f, s: png(f / f"{s}.png", 80, 100, mode="L")),
        csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--quiet"])[-1], 2, "1 band(s), the model takes 3", "s0.png"),
    Case("validate-nan-images", lambda d, m, o: (
        dataset(d / "data", image_maker=lambda f, s: tif(f / f"{s}.tif", np.where(
            np.arange(80)[:, None, None] < 20, np.nan, smooth_image(80, 100)).astype(np.float32))),
        csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"), o.mkdir(),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--quiet", "--json", str(o / "v.json")])[-1], 0, check=_nan_excluded, keeps=("v.json",)),
    Case("validate-nodata-value-images", lambda d, m, o: (
        dataset(d / "data", image_maker=lambda f, s: tif(f / f"{s}.tif", np.where(
            np.arange(80)[:, None, None] < 20, 0, smooth_image(80, 100) | 1).astype(np.uint8),
            nodata=0)),
        csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"), o.mkdir(),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--quiet", "--json", str(o / "v.json")])[-1], 0, check=_nan_excluded, keeps=("v.json",)),
    Case("validate-ignore-rows-from-metadata", lambda d, m, o: (
        dataset(d / "data"),
        ["validate", str(_meta_model(d, ignore_names=["void"], ignore_colours=[VOID])),
         "--data", str(d / "data"), "--quiet"])[-1], 0, check=_validated),
    Case("validate-ignore-colour-unknown-without-metadata", lambda d, m, o: (
        dataset(d / "data"), ["validate", str(m["nchw"]), "--data", str(d / "data"), "--quiet"])[-1],
        2, "#9B9B9B", "s0.png"),
    # outputs that cannot be written: one line naming the file, nothing left, no user file gone
    Case("disk-full-geotiff", with_files(lambda d: tif(d / "s.tif", smooth_image(300, 300)),
                                         predict("nchw", "{d}/s.tif")),
         1, "cannot write (No space left on device)", "s_mask.tif", disk="full", keeps=("filler",)),
    Case("disk-full-png", predict("nchw", A, "--overlay"), 1, "cannot write (No space left on device)",
         "a_mask.png", disk="full", keeps=("filler",)),
    Case("disk-full-validate-json", lambda d, m, o: (
        dataset(d / "data"), csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--json", str(o / "v.json"), "--quiet"])[-1],
        2, "cannot write (No space left on device)", "v.json", disk="full", keeps=("filler",)),
    Case("disk-full-video", video_predict("--mask-video", "--overlay-video", "--png-every", "2"),
         1, "cannot write (No space left on device)", "out/clip_", disk="full", keeps=("filler",)),
    Case("disk-full-workers", lambda d, m, o: (
        pytest.importorskip("distributed"), tif(d / "s.tif", smooth_image(300, 300)),
        predict("nchw", "{d}/s.tif", "--workers", "1")(d, m, o))[-1],
        2, "cannot write (No space left on device)", "s_mask.tif", disk="full", keeps=("filler",)),
    Case("file-too-large-geotiff", with_files(lambda d: tif(d / "s.tif", smooth_image(300, 300)),
                                              predict("nchw", "{d}/s.tif")),
         1, "cannot write", "s_mask.tif", disk="limit"),
    Case("file-too-large-png", predict("nchw", A), 1, "cannot write (File too large)", "a_mask.png",
         disk="limit"),
    Case("file-too-large-validate-json", lambda d, m, o: (
        dataset(d / "data"), o.mkdir(), csv_file(d / "c.csv", CLASSES_CSV + f"void,{VOID},1\n"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--classes", str(d / "c.csv"),
         "--json", str(o / "v.json"), "--quiet"])[-1],
        2, "cannot write (File too large)", "v.json", disk="limit"),
    Case("file-too-large-video", video_predict("--mask-video"), 1, "cannot write (File too large)",
         "out/clip_", disk="limit"),
    Case("validate-json-is-a-pipe", lambda d, m, o: (
        dataset(d / "data"), o.mkdir(), os.mkfifo(o / "v.json"),
        ["validate", str(m["nchw"]), "--data", str(d / "data"), "--json", str(o / "v.json"),
         "--quiet"])[-1], 2, "is not a regular file", "v.json", keeps=("v.json",)),
    # video sources and what a rerun finds in --out
    Case("video-masks-folder-holds-user-files", lambda d, m, o: (
        (o / "clip_masks").mkdir(parents=True), (o / "clip_masks" / "notes.txt").write_text("mine"),
        (o / "clip_masks" / "000000_mask.png").write_bytes(b"old"),
        video_predict("--png-every", "2")(d, m, o))[-1], 0, check=_masks_kept,
         keeps=("clip_frames.csv", "clip_masks", "clip_masks/notes.txt", "clip_masks/000000_mask.png",
                "clip_masks/000002_mask.png", "clip_masks/000004_mask.png")),
    Case("video-masks-name-is-a-file", lambda d, m, o: (
        o.mkdir(), (o / "clip_masks").write_text("mine"), video_predict("--png-every", "2")(d, m, o))[-1],
        1, "exists and is not a folder", "clip_masks", check=_file_kept("clip_masks", "mine"),
        keeps=("clip_masks",)),
    Case("video-csv-name-is-a-folder", lambda d, m, o: (
        (o / "clip_frames.csv").mkdir(parents=True), video_predict()(d, m, o))[-1],
        1, "exists and is not a regular file", "clip_frames.csv", keeps=("clip_frames.csv",)),
    Case("video-no-frames-matroska", video_predict(source=lambda d: video(d / "empty.mkv", 0)),
         1, "has no video frames", "empty.mkv"),
    Case("video-no-frames-avi", video_predict(
        source=lambda d: video(d / "empty.avi", 0, "mpeg4", "yuv420p")), 1, "has no video frames",
         "empty.avi"),
    Case("video-stream-ends-early", video_predict(source=half_stream), 0, "the stream ended early",
         "127.0.0.1", check=_frames_so_far, keeps=("stream_frames.csv",)),
    # the frame server
    Case("frame-all-nan", lambda d, m, o: _nan_frame(40), P.STATUS_OK, cli="frame",
         check=_fractions_sum(0.0)),
    Case("frame-half-nan", lambda d, m, o: _nan_frame(20), P.STATUS_OK, cli="frame",
         check=_fractions_sum(0.5)),
    Case("frame-bad-magic", lambda d, m, o: _frame(smooth_image(40, 50), magic=b"JUNK"),
         P.STATUS_BAD_MAGIC, "magic", cli="frame"),
    Case("frame-truncated-header", lambda d, m, o: _frame(smooth_image(40, 50))[:20],
         P.STATUS_BAD_HEADER, "header bytes", cli="frame"),
    Case("frame-truncated-payload", lambda d, m, o: _frame(smooth_image(40, 50))[:-100],
         P.STATUS_LENGTH_MISMATCH, "payload bytes", cli="frame"),
    Case("frame-wrong-channels", lambda d, m, o: _frame(smooth_image(40, 50)[..., :2].copy()),
         P.STATUS_UNSUPPORTED_CHANNELS, "channels", cli="frame"),
    Case("frame-unknown-dtype", lambda d, m, o: _frame(smooth_image(40, 50), dtype=9),
         P.STATUS_UNSUPPORTED_DTYPE, "dtype", cli="frame"),
    Case("frame-too-large", lambda d, m, o: _frame(smooth_image(40, 50), height=40000, width=40000,
                                                   payload_length=40000 * 40000 * 3),
         P.STATUS_TOO_LARGE, "", cli="frame"),
    # the workstation side: everything checked before data or models load
    Case("train-out-holds-user-files", lambda d, m, o: (
        o.mkdir(), (o / "config.json").write_text("{\"mine\": 1}"), csv_file(d / "c.csv", CLASSES_CSV),
        ["train", "--data", str(d), "--classes", str(d / "c.csv"), "--out", str(o)])[-1],
        2, "not an edgeseg run", "out", cli="edgeseg", check=_user_file_kept, keeps=("config.json",)),
    Case("train-resume-without-run", lambda d, m, o: (
        csv_file(d / "c.csv", CLASSES_CSV),
        ["train", "--data", str(d), "--classes", str(d / "c.csv"), "--out", str(o), "--resume"])[-1],
        2, "no edgeseg run to resume", "out", cli="edgeseg"),
    Case("train-out-is-a-file", lambda d, m, o: (
        o.write_text("x"), csv_file(d / "c.csv", CLASSES_CSV),
        ["train", "--data", str(d), "--classes", str(d / "c.csv"), "--out", str(o)])[-1],
        2, "not a folder", "out", cli="edgeseg"),
    Case("train-minutes-0", lambda d, m, o: ["train", "--data", str(d), "--classes", "c.csv", "--out",
                                             str(o), "--minutes", "0"],
         2, "--minutes: '0' is not a positive number", cli="edgeseg"),
    Case("train-batch-0", lambda d, m, o: ["train", "--data", str(d), "--classes", "c.csv", "--out",
                                           str(o), "--batch", "0"], 2, "--batch", cli="edgeseg"),
    Case("train-balance-2", lambda d, m, o: ["train", "--data", str(d), "--classes", "c.csv", "--out",
                                             str(o), "--balance", "2"], 2, "share between 0 and 1",
         cli="edgeseg"),
    Case("train-csv-latin-1", lambda d, m, o: (
        csv_file(d / "c.csv", "name,colour,ignore\nRoute nationale à péage,#FF0000,0\n", "latin-1"),
        ["train", "--data", str(d), "--classes", str(d / "c.csv"), "--out", str(o)])[-1],
        2, "not a UTF-8 text file", "c.csv", cli="edgeseg"),
    Case("data-check-empty-folder", lambda d, m, o: (
        (d / "empty").mkdir(), csv_file(d / "c.csv", CLASSES_CSV),
        ["data", "check", str(d / "empty"), "--classes", str(d / "c.csv")])[-1],
        2, "the folder is empty; a dataset holds an images/ and a masks/ folder with one mask per "
           "image, paired by file stem", "empty", cli="edgeseg"),
    Case("data-check-empty-subfolders", lambda d, m, o: (
        (d / "data" / "images").mkdir(parents=True), (d / "data" / "masks").mkdir(),
        csv_file(d / "c.csv", CLASSES_CSV),
        ["data", "check", str(d / "data"), "--classes", str(d / "c.csv")])[-1],
        2, "images/ and masks/ hold no image files", "data", cli="edgeseg"),
    Case("data-check-latin-1", lambda d, m, o: (
        csv_file(d / "c.csv", "name,colour,ignore\nCafé,#FF0000,0\n", "latin-1"),
        ["data", "check", str(d), "--classes", str(d / "c.csv")])[-1],
        2, "not a UTF-8 text file", "c.csv", cli="edgeseg"),
    Case("export-not-a-run", lambda d, m, o: ["export", str(d), "--formats", "onnx", "--out", str(o)],
         2, "not an edgeseg run directory", "in", cli="edgeseg"),
    Case("export-unknown-format-not-a-run", lambda d, m, o: [
        "export", str(d), "--formats", "pytorch", "--out", str(o)], 2, "not an edgeseg run directory",
        cli="edgeseg"),
    Case("qat-not-a-run", lambda d, m, o: (
        csv_file(d / "c.csv", CLASSES_CSV),
        ["qat", str(d), "--data", str(d), "--classes", str(d / "c.csv")])[-1],
        2, "an edgeseg run directory", "in", cli="edgeseg"),
    Case("pretrain-mask-ratio", lambda d, m, o: ["pretrain", "--images", str(d), "--out", str(o),
                                                 "--mask-ratio", "2"], 2, "--mask-ratio", cli="edgeseg"),
]


def _run_cli(cli: str, argv: list[str], capsys) -> tuple[int, str, str]:
    if cli == "run":
        from firmware_bridge.cli import main
    else:
        from edgeseg.cli import main
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    return int(code), captured.out, captured.err


def _run_frame(request: bytes, models) -> P.Reply:
    from firmware_bridge.runtime.segmenter import Segmenter
    from firmware_bridge.serve.server import FrameHandler, ServerOptions, serve_stream

    handler = FrameHandler(Segmenter(models["nchw"]), ServerOptions(max_frame_bytes=2**24))
    out = io.BytesIO()
    serve_stream(io.BytesIO(request), out, handler)
    data = out.getvalue()
    return P.decode_reply(P.decode_reply_header(data[: P.REPLY_SIZE]), data[P.REPLY_SIZE :])


def _files(folder: Path) -> set[str]:
    if not folder.exists() or not folder.is_dir():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_the_suite_is_large_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, models, tmp_path, capsys, request):
    if case.id == "out-read-only" and os.geteuid() == 0:
        pytest.skip("permissions do not bind root, who runs this suite here")
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    if case.disk == "full":
        full_disk(out, request)
    png(folder / "a.png")
    (folder / "model.onnx").symlink_to(models["nchw"])
    built = case.build(folder, models, out)
    if case.cli == "frame":
        reply = _run_frame(built, models)
        assert reply.header.status == case.code, reply.message
        assert case.error in reply.message
        if case.check:
            case.check(folder, out, "", reply)
        return
    if case.disk == "limit":
        code, stdout, stderr = _run_limited(built)
    else:
        code, stdout, stderr = _run_cli(case.cli, built, capsys)
    lines = [line for line in stderr.splitlines() if line.startswith("error")]
    assert code == case.code, stderr
    if case.error:
        hits = [line for line in lines + stderr.splitlines() if case.error in line]
        assert hits, f"{case.error!r} not in {stderr!r}"
        assert case.names in hits[0], f"the error does not name {case.names!r}: {hits[0]}"
    else:
        assert not lines, stderr
    assert "Traceback" not in stderr
    left = _files(out)  # hidden temporary files included
    assert left == set(case.keeps), f"left under --out: {sorted(left)}"
    if case.check:
        case.check(folder, out, stdout, stderr)


def test_sigterm_during_a_large_geotiff_leaves_nothing(models, tmp_path):
    """A service manager stops the process with SIGTERM: it unwinds as Ctrl-C does."""
    from firmware_bridge.io.synthetic_raster import write_synthetic_raster

    scene = tmp_path / "big.tif"
    write_synthetic_raster(scene, 4096, 3, block=256)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.cli", "predict", str(models["nchw"]), str(scene),
         "--out", str(out), "--block", "256", "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be stopped"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


_SIGNAL_ON_LISTENING = """
import io, signal, sys
from firmware_bridge.cli import main

class SignalOnListening(io.StringIO):
    def write(self, text):
        written = super().write(text)
        if "listening on" in text:
            signal.raise_signal(signal.SIGTERM)  # its handler runs before this call returns
        return written

err = SignalOnListening()
sys.stderr = err
code = main(["serve", sys.argv[1], "--socket", sys.argv[2]])
sys.__stderr__.write(err.getvalue())
sys.exit(code)
"""


def test_sigterm_as_serve_starts_removes_its_socket(models, tmp_path):
    """SIGTERM the moment the server says where it listens, as a service manager may send it.

    The server runs in a process of its own, as a service does: stderr receives the signal
    between the socket's creation and the serving loop.
    """
    sock = tmp_path / "s.sock"
    r = subprocess.run([sys.executable, "-c", _SIGNAL_ON_LISTENING, str(models["nchw"]), str(sock)],
                       capture_output=True, text=True, timeout=120)
    assert "listening on" in r.stderr
    assert r.returncode == 0, r.stderr
    assert "stopped" in r.stderr and "Traceback" not in r.stderr
    assert not sock.exists() and not sock.is_symlink()


def test_missing_delegate_leaves_no_second_traceback(tmp_path, monkeypatch, capsys):
    """LiteRT's half-built ``Delegate`` must not be created: its finaliser would print a traceback."""
    import gc

    from firmware_bridge.cli import main

    model = _tflite("t.tflite")(tmp_path)
    png(tmp_path / "a.png")
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    code = main(["predict", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                 "--delegate", str(tmp_path / "libnone.so"), "--quiet"])
    gc.collect()
    err = capsys.readouterr().err
    assert code == 2 and "cannot load the LiteRT delegate" in err
    assert unraisable == [], [u.exc_value for u in unraisable]
    assert not (tmp_path / "out").exists()
