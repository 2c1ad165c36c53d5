#!/usr/bin/env bash
# The training benchmark on the real Dubai aerial set: train tiles 1-6, validate tile 7.
# Four recipes, the same time budget each (MINUTES, default 15, training + validation):
#   1. MobileUNet-0.35, ImageNet encoder (the default recipe)
#   2. MobileUNet-0.35 from scratch
#   3. MobileUNet-0.35 after denoising-autoencoder pretraining on the training tiles' images,
#      whole encoder fine-tuned in stage 2 (--unfreeze all)
#      (PRETRAIN_MINUTES extra, default 5; tile 7 is never seen)
#   4. DeepLabV3+-0.35, ImageNet encoder
# Each run picks its best epoch on 4 of the 9 tile-7 images ('edgeseg train' default --val-images 4);
# then 'edgeseg evaluate' scores all nine for each and a markdown table (OUT/table.md).
# The data and the ImageNet no-top weights come from EDGESEG_DATA (the Dubai aerial set: images/,
# masks/) and EDGESEG_WEIGHTS (mobilenet_v2_0.35_224_no_top.h5).
# Usage: make bench-recipes   (or MINUTES=5 benchmarks/train_compare.sh for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${EDGESEG_DATA:?set EDGESEG_DATA to the Dubai aerial dataset folder}
WEIGHTS=${EDGESEG_WEIGHTS:?set EDGESEG_WEIGHTS to mobilenet_v2_0.35_224_no_top.h5}
MINUTES=${MINUTES:-15}
PRETRAIN_MINUTES=${PRETRAIN_MINUTES:-5}
OUT=${OUT:-runs/train_bench}
EDGESEG=${EDGESEG:-.venv/bin/edgeseg}
ONLY=${ONLY:-imagenet scratch denoise deeplab}
[ -d "$DATA/images" ] || { echo "no dataset at $DATA (EDGESEG_DATA): needs images/ and masks/" >&2; exit 2; }
mkdir -p "$OUT"
# The default recipe of 'edgeseg train' for every run, so that they differ only in what they compare.
recipe=(--seed 0)
common=(--data "$DATA" --classes examples/dubai_classes.csv --val-pattern 'tile7_*' --minutes "$MINUTES"
        --quiet "${recipe[@]}")

train() {  # name, then extra arguments
  local name=$1; shift
  [[ " $ONLY " == *" $name "* ]] || return 0
  rm -rf "$OUT/$name"
  echo "== $name: $*" >&2
  /usr/bin/time -v "$EDGESEG" train "${common[@]}" --out "$OUT/$name" "$@" 2> >(tee "$OUT/$name.time" >&2)
  "$EDGESEG" evaluate "$OUT/$name" --data "$DATA" --classes examples/dubai_classes.csv \
    --val-pattern 'tile7_*' --json "$OUT/$name/eval_tile7.json"
}

train imagenet --arch mobileunet --encoder-weights "$WEIGHTS"
# from scratch nothing is worth freezing: one stage, the whole network at the head rate
train scratch --arch mobileunet --encoder-weights none --stage1-epochs 0 --unfreeze all --encoder-lr-factor 1.0
if [[ " $ONLY " == *" denoise "* ]]; then
  rm -rf "$OUT/unlabelled" "$OUT/pretrain" && mkdir -p "$OUT/unlabelled"
  for f in "$DATA"/images/tile[1-6]_*; do ln -s "$f" "$OUT/unlabelled/"; done
  "$EDGESEG" pretrain --images "$OUT/unlabelled" --out "$OUT/pretrain" --minutes "$PRETRAIN_MINUTES"
fi
# denoising features are weak: fine-tune the whole encoder in stage 2, not only its top blocks
train denoise --arch mobileunet --encoder-weights "$OUT/pretrain" --unfreeze all
train deeplab --arch deeplabv3plus --encoder-weights "$WEIGHTS"

.venv/bin/python - "$OUT" "$MINUTES" <<'PY'
import json, platform, sys
from pathlib import Path
out, minutes = Path(sys.argv[1]), sys.argv[2]
names = {"imagenet": "MobileUNet-0.35, ImageNet encoder", "scratch": "MobileUNet-0.35, from scratch",
         "denoise": "MobileUNet-0.35, denoising pretraining", "deeplab": "DeepLabV3+-0.35, ImageNet encoder"}
rows, classes = [], None
for key, label in names.items():
    f = out / key / "eval_tile7.json"
    if not f.is_file():
        continue
    d = json.loads(f.read_text())
    s = d.get("scores", d)
    classes = classes or list(s["per_class"])
    cfg = json.loads((out / key / "config.json").read_text())
    epochs = len((out / key / "history.csv").read_text().strip().splitlines()) - 1
    rows.append((label, s["miou"], [s["per_class"][c]["iou"] for c in classes], epochs))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lines = [f"Tile 7 validation (all nine full images, tiled), {minutes} min budget per recipe, {cpu}, "
         f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}", "",
         "| recipe | mIoU | " + " | ".join(classes or []) + " | epochs |",
         "|---|---|" + "---|" * len(classes or []) + "---|"]
for label, miou, ious, epochs in rows:
    cells = " | ".join("-" if v is None else f"{v:.3f}" for v in ious)
    lines.append(f"| {label} | {miou:.3f} | {cells} | {epochs} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
