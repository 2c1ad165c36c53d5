"""Training throughput of ``edgeseg train --strategy multiworker`` against one process.

Runs, one after the other on this machine, (a) one ``edgeseg train`` process and (b) two
``--strategy multiworker`` worker processes on localhost, with the same global batch, steps and
seed, then prints training images per second of each (from the runs' ``history.csv``: steps x
batch over the training seconds, validation left out), the validation mIoU after the same steps,
and the machine. Data: ``--data`` (a dataset folder) or generated scenes.

    python benchmarks/multiworker_train.py [--data DIR --classes CSV --val-pattern 'tile7_*']
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def cpu_name() -> str:
    """The CPU model name."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on localhost now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def summary(run: Path) -> dict:
    """Steps, last val mIoU and training images/s (first epoch left out) of a run."""
    rows = list(csv.DictReader((run / "history.csv").open()))
    steps = sum(int(r["steps"]) for r in rows)
    seconds = sum(float(r["train_s"]) for r in rows[1:])  # the first epoch traces the step
    later = sum(int(r["steps"]) for r in rows[1:])
    return {"steps": steps, "val_miou": float(rows[-1]["val_miou"]), "train_s": seconds,
            "images_per_s": later * BATCH / seconds if seconds else float("nan")}


def main() -> int:
    """Run both, print the table."""
    global BATCH
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder (default: generated scenes)")
    p.add_argument("--classes", help="class table of --data")
    p.add_argument("--val-pattern", default="val_*")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--encoder-weights", default="none")
    args = p.parse_args()
    BATCH = args.batch
    work = Path(tempfile.mkdtemp(prefix="edgeseg-mwbench-"))
    data, classes = args.data, args.classes
    if data is None:
        from edgeseg.data import synthetic

        synthetic.write_dataset(work / "data", 8, (512, 512), seed=0, prefix="train")
        synthetic.write_dataset(work / "data", 2, (512, 512), seed=50, prefix="val")
        data, classes = str(work / "data"), str(work / "data" / "classes.csv")
    common = [sys.executable, "-m", "edgeseg.cli", "train", "--data", data, "--classes", classes,
              "--batch", str(args.batch), "--steps-per-epoch", str(args.steps),
              "--stage1-epochs", "1", "--stage2-epochs", str(args.epochs - 1), "--seed", "0",
              "--val-pattern", args.val_pattern, "--val-images", "0", "--patience", "99",
              "--encoder-weights", args.encoder_weights, "--quiet"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([*common, "--out", str(work / "one")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    addresses = [f"localhost:{port}" for port in free_ports(2)]
    procs = [subprocess.Popen([*common, "--out", str(work / "two"), "--strategy", "multiworker"],
                              env={**env, "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                                                   "task": {"type": "worker", "index": i}})},
                              stdout=subprocess.DEVNULL) for i in range(2)]
    if any(proc.wait() for proc in procs):
        raise SystemExit("a worker failed")
    one, two = summary(work / "one"), summary(work / "two")
    import tensorflow as tf

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}; "
          f"global batch {args.batch}, {one['steps']} steps, "
          f"data {'generated' if args.data is None else data}")
    print("| run | training images/s | val mIoU after the same steps |")
    print("|---|---|---|")
    print(f"| one process | {one['images_per_s']:.1f} | {one['val_miou']:.4f} |")
    print(f"| two workers on localhost (multiworker) | {two['images_per_s']:.1f} | {two['val_miou']:.4f} |")
    print(f"ratio two/one: {two['images_per_s'] / one['images_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
