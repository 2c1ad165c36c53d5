"""A deterministic generator of aerial-like scenes: the demo's built-in default data.

Each scene is bare land (sand with texture) holding water bodies and vegetation patches from
smoothed noise fields, a few straight roads, and rectangular buildings with varied roofs and
cast shadows, plus sensor noise. The mask is exact by construction. Same seed, same scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from firmware_bridge.fsutil import atomic_path
from firmware_bridge.io.images import write_mask_png

CLASSES = ["building", "land", "road", "vegetation", "water"]
COLOURS = [(60, 16, 152), (132, 41, 246), (110, 193, 228), (254, 221, 58), (226, 169, 41)]
BUILDING, LAND, ROAD, VEGETATION, WATER = range(5)


@dataclass(frozen=True)
class SceneOptions:
    """Knobs of the generator (defaults give roughly Dubai-like class shares)."""

    water_fraction: float = 0.12
    vegetation_fraction: float = 0.15
    roads_per_kpx: float = 4.0
    buildings_per_mpx: float = 260.0
    noise_sigma: float = 6.0


def _smooth_field(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise: a coarse random grid resized bicubically to ``height x width``, in [0, 1]."""
    gh, gw = max(2, height // cell + 2), max(2, width // cell + 2)
    coarse = rng.random((gh, gw)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BICUBIC))
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, 1e-6)


def _threshold_for(field: np.ndarray, fraction: float) -> float:
    return float(np.quantile(field, 1.0 - fraction))


def generate_scene(
    height: int, width: int, seed: int, options: SceneOptions = SceneOptions()
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one aerial-like RGB scene and its class mask.

    Args:
        height: Rows.
        width: Columns.
        seed: Random seed; the same seed gives the same scene.
        options: Generator knobs.

    Returns:
        ``(image HxWx3 uint8, mask HxW uint8)`` with classes indexed as :data:`CLASSES`.
    """
    rng = np.random.default_rng(seed)
    texture = _smooth_field(rng, height, width, 8) * 0.6 + _smooth_field(rng, height, width, 48) * 0.4
    mask = np.full((height, width), LAND, np.uint8)
    img = np.empty((height, width, 3), np.float32)
    sand = np.array([196, 170, 130], np.float32) + rng.normal(0, 8, 3)
    img[:] = sand * (0.82 + 0.3 * texture[..., None])

    veg = _smooth_field(rng, height, width, 96)
    vmask = veg > _threshold_for(veg, options.vegetation_fraction)
    green = np.array([70, 110, 45], np.float32)
    img[vmask] = green * (0.7 + 0.6 * texture[vmask, None])
    mask[vmask] = VEGETATION

    water = _smooth_field(rng, height, width, 160)
    wmask = water > _threshold_for(water, options.water_fraction)
    blue = np.array([40, 85, 120], np.float32)
    img[wmask] = blue * (0.9 + 0.2 * texture[wmask, None])
    mask[wmask] = WATER

    pil_img = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    pil_mask = Image.fromarray(mask)
    draw_i, draw_m = ImageDraw.Draw(pil_img), ImageDraw.Draw(pil_mask)
    n_roads = max(1, int(options.roads_per_kpx * (height + width) / 1000))
    for _ in range(n_roads):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        angle = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.15)
        length = 2 * (height + width)
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        line = [(x0 - dx, y0 - dy), (x0 + dx, y0 + dy)]
        w = int(rng.integers(7, 14))
        grey = int(rng.integers(85, 125))
        draw_i.line(line, fill=(grey, grey, grey + 4), width=w)
        draw_m.line(line, fill=ROAD, width=w)

    n_build = int(options.buildings_per_mpx * height * width / 1e6)
    road_or_water = np.isin(np.asarray(pil_mask), (ROAD, WATER))
    for _ in range(n_build):
        bw, bh = int(rng.integers(10, 34)), int(rng.integers(10, 34))
        x, y = int(rng.integers(0, max(1, width - bw))), int(rng.integers(0, max(1, height - bh)))
        if road_or_water[y:y + bh, x:x + bw].any():
            continue
        roof = tuple(int(v) for v in rng.choice([[225, 225, 220], [170, 80, 60], [150, 150, 160],
                                                  [235, 215, 180]]) + rng.integers(-15, 15, 3))
        draw_i.rectangle([x + 3, y + 3, x + bw + 3, y + bh + 3], fill=(70, 62, 55))  # shadow
        draw_i.rectangle([x, y, x + bw, y + bh], fill=roof, outline=tuple(v - 30 for v in roof))
        draw_m.rectangle([x, y, x + bw, y + bh], fill=BUILDING)

    out = np.asarray(pil_img).astype(np.float32) + rng.normal(0, options.noise_sigma, (height, width, 3))
    return out.clip(0, 255).astype(np.uint8), np.asarray(pil_mask).copy()


def write_class_table(path: str | Path) -> Path:
    """Write the generator's class table CSV (``name,colour,ignore``)."""
    rows = ["name,colour,ignore"] + [
        "{},#{:02X}{:02X}{:02X},0".format(n, *c) for n, c in zip(CLASSES, COLOURS, strict=True)
    ]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(rows) + "\n")
    return path


def write_dataset(
    root: str | Path, count: int, size: tuple[int, int], seed: int = 0, prefix: str = "scene"
) -> Path:
    """Write ``count`` generated scenes as a dataset folder (``images/``, ``masks/``, ``classes.csv``).

    Args:
        root: Output folder (created).
        count: Number of scenes.
        size: ``(height, width)`` of each scene.
        seed: Base seed; scene ``i`` uses ``seed + i``.
        prefix: File stem prefix (``{prefix}_{i:03d}``).

    Returns:
        ``root``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(count):
        image, mask = generate_scene(size[0], size[1], seed + i)
        with atomic_path(root / "images" / f"{prefix}_{i:03d}.png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        write_mask_png(root / "masks" / f"{prefix}_{i:03d}.png", mask)
    write_class_table(root / "classes.csv")
    return root
