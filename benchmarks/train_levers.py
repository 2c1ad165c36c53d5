"""Training levers side by side on Dubai: each variant of ``edgeseg train`` against the default.

For every seed, the default recipe (the README's command: ImageNet encoder, ``--minutes``
budget) and each variant (the same command plus the variant's flags) start **at the same
time** on the same machine, so all of them see the same CPU; each trains on tiles 1-5 and
chooses its epoch on tile 6. Every model is then scored on the nine images of tile 7, which
none has seen, through the same tiled ``Segmenter`` at the run's own tile and overlap.

Prints a markdown table (also ``OUT/table.md``; every figure in ``OUT/results.json``, written
after each seed so that a stopped benchmark keeps what it measured): one row per variant and
seed, then the mean and the spread (max - min) over seeds of each variant and its difference to
the default, with the IoU of the classes whose look changes most between scenes.

Usage: ``EDGESEG_DATA=... EDGESEG_WEIGHTS=... .venv/bin/python benchmarks/train_levers.py
--variant colour2="--colour-jitter 2" --variant crop384="--crop 384" [--minutes 15]
[--seeds 0 1] [--out runs/train_levers]`` (``make bench-levers``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from machine import cpu  # noqa: E402 -- after the path is set
from train_vs_peer import CLASSES, SPLITS, finish, make_splits, start, versions  # noqa: E402

WATCH = ("vegetation", "water", "land")
"""Classes whose IoU the table shows beside the mean (the ones that change most between tiles)."""


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=FLAGS`` as a name and the extra ``edgeseg train`` arguments."""
    name, sep, flags = text.partition("=")
    if not sep or not name.isidentifier() or name == "default":
        raise argparse.ArgumentTypeError(f"a variant is NAME=\"FLAGS\" (NAME not 'default'), got {text!r}")
    return name, shlex.split(flags)


def train_all(variants: dict[str, list[str]], folders: dict[str, Path], weights: str,
              minutes: float, seed: int, out: Path) -> dict[str, dict]:
    """Start every variant's training at once; wait for all; their run folders and wall times."""
    out.mkdir(parents=True, exist_ok=True)
    edgeseg = str(Path(sys.executable).parent / "edgeseg")
    base = [edgeseg, "train", "--data", str(folders["train_val"]), "--classes", str(CLASSES),
            "--encoder-weights", weights, "--val-pattern", SPLITS["val"], "--minutes",
            f"{minutes:g}", "--seed", str(seed), "--quiet"]
    started = time.monotonic()
    running = {name: start(name, [*base, *flags, "--out", str(out / name)], out)
               for name, flags in variants.items()}
    done = {}
    while running:
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                finish(name, proc, log, out)
                del running[name]
                done[name] = {"run": str(out / name), "wall_s": round(time.monotonic() - started, 1)}
        time.sleep(0.5)
    return done


def score_run(run: str, test: Path) -> dict:
    """The mIoU and per-class IoU of a run's model on the test images, at the run's own tile."""
    from edgeseg.spec import run_spec
    from edgeseg.training.runs import load_run
    from export.keras_backend import keras_segmenter
    from firmware_bridge.evaluate import score
    from firmware_bridge.io.classes import ClassTable
    from firmware_bridge.io.images import read_image, read_mask
    from firmware_bridge.io.pairs import find_pairs

    table = ClassTable.load(CLASSES)
    data = [(read_image(p.image), table.decode_mask(read_mask(p.mask), str(p.mask)))
            for p in find_pairs(test).pairs]
    spec = run_spec(run)
    model, _ = load_run(run, spec.input_size)
    s = score(keras_segmenter(model, spec), iter(data), table.names).scores
    epochs = len((Path(run) / "history.csv").read_text().strip().splitlines()) - 1
    return {"miou": round(float(s.miou), 4), "epochs": epochs,
            "iou": {n: round(float(v), 4) for n, v in zip(table.names, s.iou, strict=True)}}


def table(rows: list[dict], names: list[str], header: str) -> str:
    """Rows per variant and seed, then each variant's mean, spread and difference to the default."""
    watch = [c for c in rows[0]["default"]["iou"] if c.lower() in WATCH]
    lines = [header, "", "| variant | seed | epochs | tile 7 mIoU | - default | "
             + " | ".join(watch) + " |", "|---|---|---|---|---|" + "---|" * len(watch)]
    for name in names:
        for r in rows:
            v = r[name]
            diff = 100 * (v["miou"] - r["default"]["miou"])
            lines.append(f"| {name} | {r['seed']} | {v['epochs']} | {v['miou']:.4f} | {diff:+.1f} | "
                         + " | ".join(f"{v['iou'][c]:.3f}" for c in watch) + " |")
    for name in names:
        values = [r[name]["miou"] for r in rows]
        mean = sum(values) / len(values)
        base = sum(r["default"]["miou"] for r in rows) / len(rows)
        classes = " | ".join(f"{sum(r[name]['iou'][c] for r in rows) / len(rows):.3f}" for c in watch)
        lines.append(f"| **{name}** | mean of {len(rows)} (spread {100 * (max(values) - min(values)):.1f}) "
                     f"| | {mean:.4f} | {100 * (mean - base):+.1f} | {classes} |")
    return "\n".join(lines)


def main() -> None:
    """Train every variant per seed at the same time, score each, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help='NAME="extra edgeseg train flags" (repeat); the default recipe always runs')
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/train_levers")
    args = parser.parse_args()
    data, weights = os.environ.get("EDGESEG_DATA"), os.environ.get("EDGESEG_WEIGHTS")
    if not data or not (Path(data) / "images").is_dir():
        raise SystemExit("set EDGESEG_DATA to the Dubai aerial dataset folder (images/, masks/)")
    if not weights or not Path(weights).is_file():
        raise SystemExit("set EDGESEG_WEIGHTS to mobilenet_v2_0.35_224_no_top.h5")
    variants = {"default": [], **dict(args.variant)}
    out = Path(args.out)
    folders = make_splits(Path(data), out / "split")
    header = (f"Dubai tile 7 (9 images, never seen), mIoU at each run's own tile; train tiles 1-5, "
              f"select on tile 6; {args.minutes:g} min each, all variants of a seed trained at the "
              f"same time; variants: " + "; ".join(f"{n} = `{shlex.join(f)}`" for n, f in args.variant)
              + f"; {cpu()}; {versions()}; {time.strftime('%Y-%m-%d')}")
    rows = []
    for seed in args.seeds:
        print(f"== seed {seed}: training {', '.join(variants)} at the same time", flush=True)
        runs = train_all(variants, folders, weights, args.minutes, seed, out / f"seed{seed}")
        row = {"seed": seed}
        for name, run in runs.items():
            row[name] = {**run, **score_run(run["run"], folders["test"])}
            print(f"   {name}: {row[name]['miou']:.4f} ({row[name]['epochs']} epochs)", flush=True)
        rows.append(row)
        (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    text = table(rows, list(variants), header)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
