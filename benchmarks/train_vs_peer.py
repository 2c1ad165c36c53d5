"""edgeseg's default training recipe against a plain tf-keras script, side by side on Dubai.

For every budget and seed, ``edgeseg train`` (the README's command: ImageNet encoder, default
recipe) and ``benchmarks/peer_keras.py`` start **at the same time** on the same machine with the
same wall-clock budget, so both see the same CPU. Both train on tiles 1-5 and choose their model
on tile 6 (edgeseg with its default selection, the peer on all of tile 6); then both models go
through the same tiled ``Segmenter`` (256 px tiles, 32 px overlap) and the same confusion matrix
on the nine images of tile 7, which neither has seen. edgeseg with test-time flips
(``--tta flips``) is scored too, as a separate column.

Prints a markdown table (also ``OUT/table.md``; every figure in ``OUT/results.json``, written
after each pair so that a stopped benchmark keeps what it measured) with the machine and versions.

Usage: ``EDGESEG_DATA=... EDGESEG_WEIGHTS=... .venv/bin/python benchmarks/train_vs_peer.py
[--minutes 5 15] [--seeds 0 1] [--out runs/train_vs_peer]`` (``make bench-train``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
CLASSES = ROOT / "examples" / "dubai_classes.csv"
SPLITS = {"train_val": "tile[1-6]_*", "train": "tile[1-5]_*", "val": "tile6_*", "test": "tile7_*"}


def machine() -> str:
    """CPU model and core count, as ``lscpu`` names them."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                  if line.startswith("Model name")), platform.processor() or "?")
    return f"{model}, {os.cpu_count()} cores"


def versions() -> str:
    """Python, TensorFlow, tf-keras and numpy versions."""
    from importlib.metadata import version

    names = ("tensorflow", "tf-keras", "numpy")
    return f"Python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)


def make_splits(data: Path, out: Path) -> dict[str, Path]:
    """Folders of symbolic links to the dataset's images and masks, one per split."""
    folders = {}
    for name, pattern in SPLITS.items():
        folder = out / name
        for kind in ("images", "masks"):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            for f in sorted((data / kind).glob(pattern)):
                link = folder / kind / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
        if not any((folder / "images").iterdir()):
            raise SystemExit(f"no images matching {pattern} in {data / 'images'}")
        folders[name] = folder
    return folders


def train_pair(folders: dict[str, Path], weights: str, minutes: float, seed: int, out: Path) -> dict:
    """Start edgeseg and the peer together; wait for both; return their wall times."""
    ours, peer = out / "edgeseg", out / "peer.keras"
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    commands = {
        "edgeseg": [str(bin_dir / "edgeseg"), "train", "--data", str(folders["train_val"]),
                    "--classes", str(CLASSES), "--encoder-weights", weights,
                    "--val-pattern", SPLITS["val"], "--minutes", str(minutes), "--seed", str(seed),
                    "--quiet", "--out", str(ours)],
        "peer": [sys.executable, str(ROOT / "benchmarks" / "peer_keras.py"), "--data",
                 str(folders["train"]), "--val", str(folders["val"]), "--classes", str(CLASSES),
                 "--weights", weights, "--minutes", str(minutes), "--seed", str(seed),
                 "--out", str(peer)],
    }
    started, procs = time.monotonic(), {}
    for name, cmd in commands.items():
        log = open(out / f"{name}.log", "w")  # noqa: SIM115 -- closed below
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    wall = {}
    for name, (proc, log) in procs.items():
        code = proc.wait()
        log.close()
        wall[name] = round(time.monotonic() - started, 1)
        if code != 0:
            raise SystemExit(f"{name} failed (exit {code}); see {out / (name + '.log')}")
    return {"run": str(ours), "peer": str(peer), "wall_s": wall}


def score_pair(run: str, peer: str, test: Path) -> dict:
    """The mIoU of edgeseg's model (without and with flips) and of the peer's on the test images."""
    from edgeseg.spec import run_spec
    from edgeseg.tf_env import tf_keras
    from edgeseg.training.runs import load_run
    from export.keras_backend import keras_segmenter
    from firmware_bridge.evaluate import score
    from firmware_bridge.io.classes import ClassTable
    from firmware_bridge.io.images import read_image, read_mask
    from firmware_bridge.io.pairs import find_pairs

    _, keras = tf_keras()
    table = ClassTable.load(CLASSES)
    data = [(read_image(p.image), table.decode_mask(read_mask(p.mask), str(p.mask)))
            for p in find_pairs(test).pairs]
    meta = run_spec(run)
    ours, _ = load_run(run, (256, 256))
    theirs = keras.models.load_model(peer, compile=False)
    inp = keras.Input((256, 256, 3))
    theirs = keras.Model(inp, theirs(inp))  # the same 256 px tiles as ours
    result = {}
    for name, model, tta in (("edgeseg", ours, None), ("edgeseg_flips", ours, "flips"),
                             ("peer", theirs, None)):
        s = score(keras_segmenter(model, meta, overlap=32, tta=tta), iter(data), table.names).scores
        result[name] = {"miou": round(float(s.miou), 4),
                        "iou": {n: round(float(v), 4) for n, v in zip(table.names, s.iou, strict=True)}}
    epochs = len((Path(run) / "history.csv").read_text().strip().splitlines()) - 1
    result["edgeseg_epochs"] = epochs
    return result


def table(rows: list[dict], header: str) -> str:
    """The markdown table: one row per budget and seed, then the mean per budget."""
    lines = [header, "", "| budget | seed | edgeseg | peer | edgeseg - peer | edgeseg + flips |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        e, p, f = r["edgeseg"]["miou"], r["peer"]["miou"], r["edgeseg_flips"]["miou"]
        lines.append(f"| {r['minutes']:g} min | {r['seed']} | {e:.4f} | {p:.4f} | "
                     f"{100 * (e - p):+.1f} | {f:.4f} |")
    for minutes in sorted({r["minutes"] for r in rows}):
        some = [r for r in rows if r["minutes"] == minutes]
        e, p, f = (sum(r[k]["miou"] for r in some) / len(some)
                   for k in ("edgeseg", "peer", "edgeseg_flips"))
        lines.append(f"| {minutes:g} min | mean of {len(some)} | {e:.4f} | {p:.4f} | "
                     f"{100 * (e - p):+.1f} | {f:.4f} |")
    return "\n".join(lines)


def main() -> None:
    """Train every pair, score it, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 15.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/train_vs_peer")
    args = parser.parse_args()
    data = os.environ.get("EDGESEG_DATA")
    weights = os.environ.get("EDGESEG_WEIGHTS")
    if not data or not (Path(data) / "images").is_dir():
        raise SystemExit("set EDGESEG_DATA to the Dubai aerial dataset folder (images/, masks/)")
    if not weights or not Path(weights).is_file():
        raise SystemExit("set EDGESEG_WEIGHTS to mobilenet_v2_0.35_224_no_top.h5")
    out = Path(args.out)
    folders = make_splits(Path(data), out / "split")
    header = (f"Dubai tile 7 (9 images, never seen), mIoU; train tiles 1-5, select on tile 6; "
              f"edgeseg and the peer trained at the same time; {machine()}; {versions()}; "
              f"{time.strftime('%Y-%m-%d')}")
    rows = []
    for minutes in args.minutes:
        for seed in args.seeds:
            pair_dir = out / f"{minutes:g}min_seed{seed}"
            print(f"== {minutes:g} min, seed {seed}: training both", flush=True)
            trained = train_pair(folders, weights, minutes, seed, pair_dir)
            row = {"minutes": minutes, "seed": seed, **trained,
                   **score_pair(trained["run"], trained["peer"], folders["test"])}
            rows.append(row)
            print(f"   edgeseg {row['edgeseg']['miou']:.4f} (flips {row['edgeseg_flips']['miou']:.4f}),"
                  f" peer {row['peer']['miou']:.4f}", flush=True)
            (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    text = table(rows, header)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
