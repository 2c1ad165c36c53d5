"""The archive of scenes on a real Dask ``LocalCluster``: masks identical to one process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
rasterio = pytest.importorskip("rasterio")

from firmware_bridge.cluster import predict_many  # noqa: E402
from firmware_bridge.io.raster import predict_geotiff  # noqa: E402
from firmware_bridge.io.synthetic_raster import write_synthetic_raster  # noqa: E402
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions  # noqa: E402

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
