"""Generated square GeoTIFF scenes for the throughput and memory runs, kept for reruns."""

from __future__ import annotations

from pathlib import Path

from firmware_bridge.fsutil import atomic_path
from firmware_bridge.io.synthetic_raster import write_synthetic_raster


def scene_path(folder: Path, size: int, channels: int = 3) -> Path:
    """Where the ``size x size`` scene lives in ``folder``."""
    return Path(folder) / f"scene_{size}_{channels}band.tif"


def ensure_scene(folder: Path, size: int, channels: int = 3, log=None) -> Path:
    """A ``size x size`` uint8 GeoTIFF of smooth aerial-like bands, written once and reused.

    Written block by block (memory stays one block) and atomically, by
    :func:`firmware_bridge.io.synthetic_raster.write_synthetic_raster` (the generator that
    ``edgeseg-run bench`` uses). Its content does not change the timing of a convolutional
    network; its size does.

    Args:
        folder: Folder of the scenes (created when missing).
        size: Edge in pixels.
        channels: Bands.
        log: Called with a line when a scene is generated.

    Returns:
        The scene's path.
    """
    import rasterio


    path = scene_path(folder, size, channels)
    if path.is_file():
        with rasterio.open(path) as ds:
            if (ds.width, ds.height, ds.count) == (size, size, channels):
                return path
    Path(folder).mkdir(parents=True, exist_ok=True)
    if log:
        log(f"generating a {size}x{size} scene ({size * size / 1e6:.1f} MPix) -> {path}")
    with atomic_path(path) as tmp:
        write_synthetic_raster(tmp, size, channels)
    return path
