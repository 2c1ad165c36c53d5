"""edgeseg's default training recipe against a plain tf-keras script, side by side on Dubai.

For every budget and seed, ``edgeseg train`` (the README's command: ImageNet encoder, default
recipe) and ``benchmarks/peer_keras.py`` start **at the same time** on the same machine with the
same wall-clock budget, so both see the same CPU. Both train on tiles 1-5 and choose their model
on tile 6 (edgeseg with its default selection, the peer on all of tile 6); then both models go
through the same tiled ``Segmenter`` (256 px tiles, 32 px overlap) and the same confusion matrix
on the nine images of tile 7, which neither has seen. edgeseg with test-time flips
(``--tta flips``) is scored too, as a separate column.

With ``--adapt-minutes M``, edgeseg trains for the budget less ``M`` minutes, then adapts the
run to tile 7's images, unlabelled (``edgeseg adapt``: self-training, choosing its epoch on
tile 6 as before), for the time left of ``M`` minutes, so that both together stay within the
peer's budget; the adapted model is scored in a column of its own (``edgeseg`` is then the run
before adaptation). Tile 7's masks only score.

Prints a markdown table (also ``OUT/table.md``; every figure in ``OUT/results.json``, written
after each pair so that a stopped benchmark keeps what it measured) with the machine and versions.

Usage: ``EDGESEG_DATA=... EDGESEG_WEIGHTS=... .venv/bin/python benchmarks/train_vs_peer.py
[--minutes 5 15] [--seeds 0 1] [--adapt-minutes 0] [--out runs/train_vs_peer]``
(``make bench-train``).
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
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
CLASSES = ROOT / "examples" / "dubai_classes.csv"
SPLITS = {"train_val": "tile[1-6]_*", "train": "tile[1-5]_*", "val": "tile6_*", "test": "tile7_*"}
from machine import cpu  # noqa: E402 -- after the path is set

START_S = 10.0
"""Seconds kept for the adaptation's process start, outside its own clock."""


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


def start(name: str, cmd: list[str], out: Path) -> tuple[subprocess.Popen, object]:
    """Start a command with its output in ``OUT/<name>.log``."""
    log = open(out / f"{name}.log", "w")  # noqa: SIM115 -- closed by finish()
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log


def finish(name: str, proc: subprocess.Popen, log, out: Path) -> None:
    """Wait for a command started by :func:`start`; stop the benchmark when it failed."""
    code = proc.wait()
    log.close()
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {out / (name + '.log')}")


def train_pair(folders: dict[str, Path], weights: str, minutes: float, seed: int, out: Path,
               adapt_minutes: float = 0.0) -> dict:
    """Start edgeseg and the peer together; wait for both; return their wall times.

    With ``adapt_minutes``, edgeseg trains ``minutes - adapt_minutes``, then adapts to the
    test images (unlabelled) for at most ``adapt_minutes``, ending within ``minutes`` of the
    start.
    """
    ours, peer, adapted = out / "edgeseg", out / "peer.keras", out / "edgeseg_adapted"
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    commands = {
        "edgeseg": [str(bin_dir / "edgeseg"), "train", "--data", str(folders["train_val"]),
                    "--classes", str(CLASSES), "--encoder-weights", weights,
                    "--val-pattern", SPLITS["val"], "--minutes", f"{minutes - adapt_minutes:g}",
                    "--seed", str(seed), "--quiet", "--out", str(ours)],
        "peer": [sys.executable, str(ROOT / "benchmarks" / "peer_keras.py"), "--data",
                 str(folders["train"]), "--val", str(folders["val"]), "--classes", str(CLASSES),
                 "--weights", weights, "--minutes", str(minutes), "--seed", str(seed),
                 "--out", str(peer)],
    }
    started = time.monotonic()
    running = {name: start(name, cmd, out) for name, cmd in commands.items()}
    wall = {}
    while running:  # each one's wall time as it ends; the adaptation starts when training ends
        for name, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            finish(name, proc, log, out)
            del running[name]
            wall[name] = round(time.monotonic() - started, 1)
            if name == "edgeseg" and adapt_minutes:
                left = minutes * 60 - (time.monotonic() - started) - START_S
                if left <= 0:
                    raise SystemExit(f"edgeseg train took {wall[name]:.0f} s: no time left of the "
                                     f"{minutes:g} min to adapt; give a larger --adapt-minutes")
                cmd = [str(bin_dir / "edgeseg"), "adapt", str(ours), "--images",
                       str(folders["test"] / "images"), "--data", str(folders["train_val"]),
                       "--classes", str(CLASSES), "--minutes",
                       f"{min(adapt_minutes * 60, left) / 60:.3f}", "--seed", str(seed), "--quiet",
                       "--out", str(adapted)]
                running["edgeseg_adapted"] = start("edgeseg_adapted", cmd, out)
        time.sleep(0.5)
    return {"run": str(ours), "peer": str(peer), "wall_s": wall,
            **({"adapted": str(adapted)} if adapt_minutes else {})}


def score_pair(run: str, peer: str, test: Path, adapted: str | None = None) -> dict:
    """The mIoU of edgeseg's model (without and with flips), of the peer's, and of the adapted run."""
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
    models = [("edgeseg", ours, meta, None), ("edgeseg_flips", ours, meta, "flips"),
              ("peer", theirs, meta, None)]
    if adapted:
        models.append(("edgeseg_adapted", load_run(adapted, (256, 256))[0], run_spec(adapted), None))
    for name, model, spec, tta in models:
        s = score(keras_segmenter(model, spec, overlap=32, tta=tta), iter(data), table.names).scores
        result[name] = {"miou": round(float(s.miou), 4),
                        "iou": {n: round(float(v), 4) for n, v in zip(table.names, s.iou, strict=True)}}
    epochs = len((Path(run) / "history.csv").read_text().strip().splitlines()) - 1
    result["edgeseg_epochs"] = epochs
    return result


def table(rows: list[dict], header: str) -> str:
    """The markdown table: one row per budget and seed, then the mean per budget.

    Rows with an adapted run add its mIoU and its difference to the peer.
    """
    adapt = all("edgeseg_adapted" in r for r in rows)
    keys = ("edgeseg", "peer", "edgeseg_flips") + (("edgeseg_adapted",) if adapt else ())
    lines = [header, "", "| budget | seed | edgeseg | peer | edgeseg - peer | edgeseg + flips |"
             + (" edgeseg adapted | adapted - peer |" if adapt else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if adapt else "")]

    def line(minutes: float, seed: str, values: list[float]) -> str:
        e, p, f = values[:3]
        text = f"| {minutes:g} min | {seed} | {e:.4f} | {p:.4f} | {100 * (e - p):+.1f} | {f:.4f} |"
        return text + (f" {values[3]:.4f} | {100 * (values[3] - p):+.1f} |" if adapt else "")

    for r in rows:
        lines.append(line(r["minutes"], str(r["seed"]), [r[k]["miou"] for k in keys]))
    for minutes in sorted({r["minutes"] for r in rows}):
        some = [r for r in rows if r["minutes"] == minutes]
        means = [sum(r[k]["miou"] for r in some) / len(some) for k in keys]
        lines.append(line(minutes, f"mean of {len(some)}", means))
    return "\n".join(lines)


def main() -> None:
    """Train every pair, score it, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 15.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--adapt-minutes", type=float, default=0.0,
                        help="edgeseg trains for the budget less this, then adapts to the test "
                             "images (unlabelled) for the rest (default 0: no adaptation)")
    parser.add_argument("--out", default="runs/train_vs_peer")
    args = parser.parse_args()
    if args.adapt_minutes < 0 or any(args.adapt_minutes >= m for m in args.minutes if args.adapt_minutes):
        raise SystemExit("--adapt-minutes must be 0, or more than 0 and less than every --minutes")
    data = os.environ.get("EDGESEG_DATA")
    weights = os.environ.get("EDGESEG_WEIGHTS")
    if not data or not (Path(data) / "images").is_dir():
        raise SystemExit("set EDGESEG_DATA to the Dubai aerial dataset folder (images/, masks/)")
    if not weights or not Path(weights).is_file():
        raise SystemExit("set EDGESEG_WEIGHTS to mobilenet_v2_0.35_224_no_top.h5")
    out = Path(args.out)
    folders = make_splits(Path(data), out / "split")
    header = (f"Dubai tile 7 (9 images, never seen), mIoU; train tiles 1-5, select on tile 6; "
              f"edgeseg and the peer trained at the same time; {cpu()}; {versions()}; "
              f"{time.strftime('%Y-%m-%d')}")
    if args.adapt_minutes:
        header += (f"; edgeseg trained for the budget less {args.adapt_minutes:g} min, then adapted "
                   "to tile 7's images, unlabelled, for the rest (edgeseg adapt)")
    rows = []
    for minutes in args.minutes:
        for seed in args.seeds:
            pair_dir = out / f"{minutes:g}min_seed{seed}"
            print(f"== {minutes:g} min, seed {seed}: training both", flush=True)
            trained = train_pair(folders, weights, minutes, seed, pair_dir, args.adapt_minutes)
            row = {"minutes": minutes, "seed": seed, "adapt_minutes": args.adapt_minutes, **trained,
                   **score_pair(trained["run"], trained["peer"], folders["test"],
                                trained.get("adapted"))}
            rows.append(row)
            adapted = (f", adapted {row['edgeseg_adapted']['miou']:.4f}"
                       if "edgeseg_adapted" in row else "")
            print(f"   edgeseg {row['edgeseg']['miou']:.4f} (flips {row['edgeseg_flips']['miou']:.4f}),"
                  f" peer {row['peer']['miou']:.4f}{adapted}", flush=True)
            (out / "results.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    text = table(rows, header)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
