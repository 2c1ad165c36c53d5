"""Generated rasters for benchmarks, tests and examples: deterministic, smooth, aerial-looking.

A GeoTIFF of any size is written block by block (memory stays one block), with a CRS and
transform, so that streaming prediction can be measured and checked without real imagery.
"""

from __future__ import annotations


def synthetic_block(y0: int, x0: int, h: int, w: int, channels: int, dtype) -> list:
    """A deterministic, smooth, aerial-looking ``channels x h x w`` block at ``(y0, x0)``."""
    import numpy as np

    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    base = np.sin(xx / 37.0) * np.cos(yy / 53.0) + 0.5 * np.sin((xx + 2 * yy) / 211.0)
    top = 255.0 if np.dtype(dtype) == np.uint8 else 1.0
    bands = [(0.5 + 0.25 * np.sin(base * (c + 1) + c)) * top for c in range(channels)]
    return [b.astype(dtype) for b in bands]


def write_synthetic_raster(path, size: int, channels: int, block: int = 1024) -> None:
    """Write a ``size x size`` uint8 GeoTIFF block by block (memory stays one block)."""
    import numpy as np
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "height": size, "width": size, "count": channels,
               "dtype": "uint8", "crs": "EPSG:32640", "compress": "deflate", "tiled": True,
               "blockxsize": 256, "blockysize": 256,
               "transform": Affine(0.3, 0.0, 500000.0, 0.0, -0.3, 2800000.0)}
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, block):
            for x in range(0, size, block):
                h, w = min(block, size - y), min(block, size - x)
                dst.write(np.stack(synthetic_block(y, x, h, w, channels, np.uint8)),
                          window=Window(x, y, w, h))


def write_synthetic_raster_in_child(path, size: int, channels: int) -> None:
    """:func:`write_synthetic_raster` in a child process.

    The caller's peak memory then stays its own (benchmarks measure it).
    """
    import subprocess
    import sys

    code = ("import sys; from firmware_bridge.io.synthetic_raster import write_synthetic_raster as w; "
            "w(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(path), str(size), str(channels)], check=True)
