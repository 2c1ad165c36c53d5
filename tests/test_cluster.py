"""The archive of scenes on a real Dask ``LocalCluster``: masks identical to one process.

Also every way of not reaching a cluster, one row each: each ends with a one-line error that
names the address, within a bounded time. All traffic stays on 127.0.0.1 (the unroutable row
uses the broadcast address, which the kernel refuses without sending anything).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
rasterio = pytest.importorskip("rasterio")

from firmware_bridge.cluster import predict_many  # noqa: E402
from firmware_bridge.io.raster import predict_geotiff  # noqa: E402
from firmware_bridge.io.synthetic_raster import write_synthetic_raster  # noqa: E402
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # a scheduler's HTTP server takes another port
    "ignore:Port .* is already in use:UserWarning")
OPTIONS = SegmenterOptions(tile=64, overlap=16, threads=1)


def _reproject(src: Path, dst: Path) -> Path:
    """The same pixels with another CRS and transform (lat/lon degrees)."""
    from rasterio.transform import from_origin

    with rasterio.open(src) as ds:
        profile = dict(ds.profile, crs="EPSG:4326", transform=from_origin(55.1, 25.3, 1e-5, 1e-5))
        data = ds.read()
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_synthetic_raster(folder / "big.tif", 700, 3, block=256)  # several 256-pixel blocks
    write_synthetic_raster(folder / "small.tif", 40, 3)  # smaller than one tile
    write_synthetic_raster(folder / "tmp_src.tif", 300, 3)
    _reproject(folder / "tmp_src.tif", folder / "wgs84.tif")
    (folder / "tmp_src.tif").unlink()
    return folder


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _single(model: Path, src: Path, out: Path) -> np.ndarray:
    seg = Segmenter(model, options=OPTIONS)
    path = predict_geotiff(seg, src, out / f"single_{src.stem}.tif", block=256).mask
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_masks_equal_one_process_and_keep_georeference(models, scenes, client, tmp_path):
    corrupt = tmp_path / "corrupt.tif"  # cannot even be opened: found while planning
    corrupt.write_bytes((scenes / "big.tif").read_bytes()[:3000])
    write_synthetic_raster(tmp_path / "whole.tif", 1024, 3, block=256)
    cut = tmp_path / "cut.tif"  # opens, but its blocks fail on a worker
    data = (tmp_path / "whole.tif").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    lines: list[str] = []
    report = predict_many(models["nchw"], [scenes, corrupt, cut], out, client, options=OPTIONS,
                          block=256, log=lines.append)
    assert sorted(p.name for p in report.written) == ["big_mask.tif", "small_mask.tif",
                                                      "wgs84_mask.tif"]
    assert sorted(p.name for p, _ in report.failed) == ["corrupt.tif", "cut.tif"]
    assert any("corrupt.tif" in line for line in lines) and any("cut.tif" in line for line in lines)
    summary = json.loads((out / "predict_summary.json").read_text())
    assert sorted(Path(f["input"]).name for f in summary["failed"]) == ["corrupt.tif", "cut.tif"]
    for name in ("big", "small", "wgs84"):
        with rasterio.open(out / f"{name}_mask.tif") as ds, rasterio.open(scenes / f"{name}.tif") as src:
            np.testing.assert_array_equal(ds.read(1), _single(models["nchw"], scenes / f"{name}.tif",
                                                              tmp_path))
            assert ds.crs == src.crs and ds.transform == src.transform
    assert sorted(p.name for p in out.iterdir()) == ["big_mask.tif", "predict_summary.json",
                                                     "small_mask.tif", "wgs84_mask.tif"]
    again = predict_many(models["nchw"], [scenes], out, client, options=OPTIONS, block=256)
    assert len(again.skipped) == 3 and not again.written


def test_a_killed_worker_still_yields_every_mask(models, scenes, client, tmp_path):
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill_one(done: int, total: int) -> None:
        if done == 2 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    out = tmp_path / "out"
    report = predict_many(models["nchw"], [scenes / "big.tif"], out, client, options=OPTIONS,
                          block=128, on_unit=kill_one)
    assert killed and not report.failed
    with rasterio.open(out / "big_mask.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), _single(models["nchw"], scenes / "big.tif", tmp_path))


def test_interrupt_leaves_no_partial_output(models, scenes, tmp_path):
    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_many(models["nchw"], [scenes / "big.tif"], out, workers=1, options=OPTIONS,
                     block=128, on_unit=stop)
    assert list(out.iterdir()) == []


def test_command_line_on_a_local_cluster(models, scenes, tmp_path, capsys):
    from firmware_bridge.cli import main

    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    out = tmp_path / "out"
    code = main(["predict", str(models["nchw"]), str(scenes / "small.tif"), str(bad), "--out",
                 str(out), "--workers", "1", "--tile", "64", "--overlap", "16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "bad.tif: unreadable raster" in err and "1 scene(s)" in err
    assert (out / "small_mask.tif").is_file()
    assert "so assumed" not in err  # the model's metadata says everything
    # a model without edgeseg metadata: one line names what was assumed, as without a cluster
    assert main(["predict", str(models["foreign"]), str(scenes / "small.tif"), "--out",
                 str(tmp_path / "foreign"), "--workers", "1", "--tile", "64", "--quiet"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "so assumed:" in line]
    assert len(said) == 1 and "foreign.onnx" in said[0] and "(--mean/--std/--scale)" in said[0]
    assert main(["predict", str(models["nchw"]), str(scenes / "small.tif"), "--out", str(out),
                 "--workers", "1", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert main(["predict", str(models["nchw"]), str(tmp_path / "x.png"), "--out", str(out),
                 "--workers", "1"]) == 2
    assert "cluster path takes (Geo)TIFF scenes" in capsys.readouterr().err


def test_inputs_as_folders_and_globs(scenes, tmp_path):
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.io.inputs import expand_inputs

    tifs = (".tif", ".tiff")
    assert [p.name for p in expand_inputs([scenes], tifs)] == ["big.tif", "small.tif", "wgs84.tif"]
    assert [p.name for p in expand_inputs([f"{scenes}/s*.tif", scenes / "big.tif"], tifs)] == [
        "small.tif", "big.tif"]
    with pytest.raises(EdgesegError, match="matches no"):
        expand_inputs([f"{scenes}/*.png"], tifs)
    with pytest.raises(EdgesegError, match="holds no"):
        expand_inputs([tmp_path], tifs)


def test_the_cluster_benchmark_runs(models):
    from firmware_bridge.cluster.bench import cluster_bench, markdown

    result = cluster_bench(models["nchw"], [1], options=OPTIONS, scenes=2, size=200, large=0,
                           block=128, log=lambda line: None)
    assert result["scenes"] == 2 and result["cluster"][0]["workers"] == 1
    assert result["cluster"][0]["mpix_per_s"] > 0 and result["cluster"][0]["peak_rss_mb_per_worker"]
    rows = 2 + len(result["single"]) + len(result["cluster"])  # header and rule, then one per run
    assert len(markdown(result).splitlines()) == rows


# --- reaching the cluster: every wait bounded, every failure one line naming the address --------

@contextlib.contextmanager
def _silent_peer() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>dashboard</html>")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        pass


@contextlib.contextmanager
def _http_server(scheme: str) -> Iterator[str]:
    """An HTTP server on 127.0.0.1, addressed as ``scheme://127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _in_process(workers: int, worker_address: bool = False) -> Iterator[str]:
    """A scheduler on 127.0.0.1 in this process with ``workers`` thread workers."""
    with distributed.LocalCluster(n_workers=workers, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40) as cluster:
        if worker_address:
            yield next(iter(cluster.scheduler_info["workers"]))
        else:
            yield cluster.scheduler_address


@contextlib.contextmanager
def _given(address: str) -> Iterator[str]:
    yield address


@dataclass
class Unreachable:
    """One way of not reaching a cluster.

    Attributes:
        id: Test id.
        peer: Context manager that yields the ``--scheduler`` address.
        error: Substring of the one-line error.
        extra: More arguments.
    """

    id: str
    peer: Callable[[], contextlib.AbstractContextManager[str]]
    error: str
    extra: tuple[str, ...] = ()


UNREACHABLE = [
    Unreachable("silent-tcp-peer", _silent_peer, "accepted the connection but did not answer as "
                "a Dask scheduler within 2 s"),
    Unreachable("http-server-as-tcp", lambda: _http_server("tcp"), "did not answer as a Dask "
                "scheduler within 2 s"),
    Unreachable("http-url", lambda: _http_server("http"), "is a web page (the dashboard)"),
    Unreachable("scheduler-without-workers", lambda: _in_process(0),
                "no Dask worker joined the scheduler at"),
    Unreachable("worker-not-scheduler", lambda: _in_process(1, worker_address=True),
                "is a Dask Worker, not a scheduler"),
    Unreachable("refused", lambda: _given("tcp://127.0.0.1:1"),
                "cannot reach a Dask scheduler at tcp://127.0.0.1:1 within 2 s"),
    Unreachable("unroutable", lambda: _given("tcp://255.255.255.255:8786"),
                "cannot reach a Dask scheduler at tcp://255.255.255.255:8786 within 1 s",
                ("--connect-timeout", "1")),
    Unreachable("not-an-address", lambda: _given("not an address"),
                "is not a Dask scheduler address"),
    Unreachable("port-out-of-range", lambda: _given("tcp://127.0.0.1:99999"),
                "port 99999 is not in 1-65535"),
]


@pytest.mark.parametrize("case", UNREACHABLE, ids=[c.id for c in UNREACHABLE])
def test_a_cluster_out_of_reach_fails_in_one_line(case: Unreachable, models, scenes, tmp_path,
                                                  capsys):
    from firmware_bridge.cli import main

    out = tmp_path / "out"
    with case.peer() as address:
        started = time.monotonic()
        code = main(["predict", str(models["nchw"]), str(scenes / "small.tif"), "--out", str(out),
                     "--scheduler", address, "--connect-timeout", "2", "--worker-timeout", "2",
                     "--quiet", *case.extra])
        seconds = time.monotonic() - started
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and case.error in errors[0], err
    assert address in errors[0] or repr(address) in errors[0], errors[0]
    assert "Traceback" not in err
    assert seconds < 60, f"took {seconds:.0f} s with 2 s timeouts"
    assert not out.exists() or list(out.iterdir()) == []


def test_the_help_states_the_timeouts(capsys):
    from firmware_bridge.cli import main
    from firmware_bridge.cluster.connect import DEFAULT_CONNECT_TIMEOUT, DEFAULT_WORKER_TIMEOUT

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--connect-timeout SECONDS" in text and "--worker-timeout SECONDS" in text
    assert f"(default {DEFAULT_CONNECT_TIMEOUT:g})" in text
    assert f"(default {DEFAULT_WORKER_TIMEOUT:g})" in text


def test_local_workers_above_the_cores_warn_and_far_above_are_refused(monkeypatch, tmp_path,
                                                                       capsys, models, scenes):
    from firmware_bridge.cli import main
    from firmware_bridge.cluster import connect
    from firmware_bridge.errors import EdgesegError

    monkeypatch.setattr(connect, "usable_cores", lambda: 2)
    lines: list[str] = []
    connect.check_local_workers(2, lines.append)
    assert lines == []
    connect.check_local_workers(8, lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning: --workers 8 on 2 core(s)")
    for workers in (9, 64, 10000):
        with pytest.raises(EdgesegError, match=f"--workers {workers}: more than 8 local worker"):
            connect.check_local_workers(workers, lines.append)
    started = time.monotonic()
    code = main(["predict", str(models["nchw"]), str(scenes / "small.tif"), "--out",
                 str(tmp_path / "out"), "--workers", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "error: --workers 64: more than 8 local worker processes" in err
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()


def _tiny_tflite(folder: Path) -> Path:
    from tiny_models import metadata, tflite_bytes

    from firmware_bridge.runtime.metadata import tflite_with_metadata

    path = folder / "tiny.tflite"
    path.write_bytes(tflite_with_metadata(tflite_bytes(), metadata(layout="NHWC")))
    return path


THREADED = SegmenterOptions(overlap=16, threads=1, batch=3)  # batches of 3 and less: resizes


def test_threads_of_one_worker_never_share_an_interpreter(scenes, tmp_path):
    from firmware_bridge.cluster.worker import ModelSpec, Unit, predict_unit, segmenter
    from firmware_bridge.io.blocks import SceneGrid

    spec = ModelSpec(str(_tiny_tflite(tmp_path)), None, THREADED)
    with ThreadPoolExecutor(2) as pool:
        opened = list(pool.map(lambda _: (threading.get_ident(), segmenter(spec)), range(8)))
    assert len({id(seg) for _, seg in opened}) == len({ident for ident, _ in opened})
    grid = SceneGrid(700, 700, (64, 64), 16)
    units = [Unit(0, str(scenes / "big.tif"), (1, 2, 3), (region,), grid)
             for region in grid.regions(64)]
    alone = [predict_unit(spec, unit) for unit in units]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda unit: predict_unit(spec, unit), units))
    for one, two in zip(alone, together, strict=True):
        for (_, a), (_, b) in zip(one.masks, two.masks, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_worker_with_two_threads_runs_litert(scenes, tmp_path):
    model = _tiny_tflite(tmp_path)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        report = predict_many(model, [scenes / "big.tif"], tmp_path / "out", client,
                              options=THREADED, block=64)
    assert not report.failed, report.failed
    seg = Segmenter(model, options=THREADED)
    alone = predict_geotiff(seg, scenes / "big.tif", tmp_path / "alone.tif", block=64).mask
    with rasterio.open(tmp_path / "out" / "big_mask.tif") as ds, rasterio.open(alone) as ref:
        np.testing.assert_array_equal(ds.read(1), ref.read(1))


def test_one_litert_interpreter_runs_one_call_at_a_time(tmp_path):
    seg = Segmenter(_tiny_tflite(tmp_path), options=THREADED)
    rng = np.random.default_rng(0)
    batches = [rng.random((1, 64, 64, 3), dtype=np.float32) for _ in range(16)]
    alone = [seg.backend.run(x) for x in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(seg.backend.run, batches * 8))
    for a, b in zip(alone * 8, together, strict=True):
        np.testing.assert_array_equal(a, b)


# --- every tile once: strips of blocks, the bands between them finished by the client ----------

def _scene_with_hole(path: Path, size: int, hole: tuple[slice, slice]) -> Path:
    """A generated scene whose pixels in ``hole`` hold the nodata value 0 in every band."""
    from firmware_bridge.io.synthetic_raster import synthetic_block

    data = np.stack(synthetic_block(0, 0, size, size, 3, np.uint8))
    data = np.maximum(data, 1)
    data[:, hole[0], hole[1]] = 0
    from rasterio.transform import from_origin

    profile = {"driver": "GTiff", "height": size, "width": size, "count": 3, "dtype": "uint8",
               "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "crs": "EPSG:32640", "transform": from_origin(500000.0, 2800000.0, 0.3, 0.3)}
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
    return path


@pytest.mark.parametrize(("model", "overlap"), [("nchw", 16), ("nchw", 40), ("uint8", 16)])
def test_each_tile_is_predicted_once_and_masks_equal_one_process(models, tmp_path, monkeypatch,
                                                                  model, overlap):
    from firmware_bridge.cluster.archive import BLOCKS_PER_UNIT
    from firmware_bridge.io.blocks import SceneGrid, strips
    from firmware_bridge.runtime.backends import Backend
    from firmware_bridge.runtime.tiling import rows_below

    size, block = 700, 128
    options = SegmenterOptions(tile=64, overlap=overlap, threads=1)
    grid = SceneGrid(size, size, (64, 64), overlap)
    cuts = [s[0].y0 for s in strips(grid, block, BLOCKS_PER_UNIT)][1:]
    assert len(cuts) >= 4 and all(rows_below(grid.boxes(), y) > 0 for y in cuts)
    # pixels without data across the band of a border between two strips
    hole = (slice(cuts[1] - 10, cuts[1] + 10), slice(100, 300))
    src = _scene_with_hole(tmp_path / "scene.tif", size, hole)
    single = Segmenter(models[model], options=options)
    with rasterio.open(predict_geotiff(single, src, tmp_path / "single.tif", block=block).mask) as ds:
        expected = ds.read(1)
    assert (expected[hole] == 255).all() and (expected != 255).sum() == size * size - 20 * 200

    calls: list[tuple[int, bool]] = []  # (tiles, a blank probe) of every model call
    lock = threading.Lock()
    run = Backend.run

    def counted(self, x: np.ndarray) -> np.ndarray:
        with lock:
            calls.append((x.shape[0], bool(x.min() == x.max())))
        return run(self, x)

    monkeypatch.setattr(Backend, "run", counted)  # the workers are threads of this process
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        report = predict_many(models[model], [src], tmp_path / "out", client, options=options,
                              block=block)
    assert not report.failed and report.nodata == 20 * 200
    with rasterio.open(tmp_path / "out" / "scene_mask.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), expected)
    tiles = [n for n, blank in calls if not blank]
    assert tiles == [1] * len(grid.boxes())  # one call per tile position, none twice
    # an 8-bit model runs one blank tile per opened copy to learn its output's size
    assert sum(blank for _, blank in calls) <= (2 if model == "uint8" else 0)
