#!/usr/bin/env bash
# The C array of an exported model on TensorFlow Lite for Microcontrollers, built for this
# machine with TFLM's reference kernels, against LiteRT on the same tile.
#
#   TFLM_SRC=path/to/tflite-micro scripts/check_tflm.sh MODEL.cc TILE.png
#
# MODEL.cc (and MODEL.h beside it): `edgeseg export --formats c-array`. TILE.png: an RGB image
# of the model's input size (scripts/make_tiny_models.py writes both). Steps: copy TFLM into
# a build folder, build libtensorflow-microlite.a (TFLM's Makefile, target `microlite`),
# compile tools/tflm_host/main.cc with the model array and a MicroMutableOpResolver holding
# exactly the operators the header lists, run the tile with a large arena, rebuild with the
# arena it reported (arena_used_bytes() + 16) and run again, then compare the int8 scores with
# LiteRT's (tools/tflm_host/tflm_check.py). Prints the model's flash size (the array's bytes)
# and the arena.
#
# Environment:
#   TFLM_SRC        a tflite-micro source tree (required; not modified)
#   TFLM_DEPS       a folder holding gemmlowp/, ruy/, flatbuffers/ and kissfft/ unpacked at the
#                   versions TFLM pins (tensorflow/lite/micro/tools/make/third_party_downloads.inc),
#                   for machines without internet; unset: TFLM's Makefile downloads them
#   TFLM_BUILD_DIR  where TFLM is copied and built, reused by later runs (default:
#                   /tmp/edgeseg-tflm-build)
#   PYTHON          Python with edgeseg[device] (default .venv/bin/python)
#   JOBS            make jobs (default 2)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
[ $# -eq 2 ] || { echo "usage: TFLM_SRC=... $0 MODEL.cc TILE.png" >&2; exit 2; }
SOURCE=$(realpath "$1")
TILE=$(realpath "$2")
HEADER=${SOURCE%.cc}.h
if [ ! -f "$SOURCE" ] || [ ! -f "$HEADER" ]; then echo "$SOURCE and $HEADER must both exist" >&2; exit 2; fi
SRC=${TFLM_SRC:?set TFLM_SRC to a tflite-micro source tree}
[ -f "$SRC/tensorflow/lite/micro/tools/make/Makefile" ] || { echo "$SRC is not a tflite-micro tree" >&2; exit 2; }
BUILD=${TFLM_BUILD_DIR:-/tmp/edgeseg-tflm-build}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
JOBS=${JOBS:-2}
TFLM=$BUILD/tflm
MAKEFILE=tensorflow/lite/micro/tools/make/Makefile
DOWNLOADS=$TFLM/tensorflow/lite/micro/tools/make/downloads

say() { printf '== %s\n' "$*"; }

if [ ! -f "$TFLM/.edgeseg-copied" ]; then
  say "copying TFLM into $TFLM"
  rm -rf "$TFLM" && mkdir -p "$TFLM"
  (cd "$SRC" && tar --exclude=./gen --exclude=./.git -cf - .) | tar -xf - -C "$TFLM"
  touch "$TFLM/.edgeseg-copied"
fi
if [ -n "${TFLM_DEPS:-}" ]; then
  # What TFLM's download step does with each archive: unpack, drop BUILD files, patch.
  declare -A PATCHES=([gemmlowp]="" [ruy]=""
                      [flatbuffers]=tensorflow/lite/micro/tools/make/flatbuffers.patch
                      [kissfft]=third_party/kissfft/kissfft.patch)
  for dep in gemmlowp ruy flatbuffers kissfft; do
    [ -d "$DOWNLOADS/$dep" ] && continue
    [ -d "$TFLM_DEPS/$dep" ] || { echo "TFLM_DEPS has no $dep/" >&2; exit 2; }
    mkdir -p "$DOWNLOADS"
    cp -a "$TFLM_DEPS/$dep" "$DOWNLOADS/$dep.partial"
    find "$DOWNLOADS/$dep.partial" -type f -name '*BUILD' -delete
    if [ -n "${PATCHES[$dep]}" ]; then
      patch -s -p1 -d "$DOWNLOADS/$dep.partial" < "$TFLM/${PATCHES[$dep]}"
    fi
    mv "$DOWNLOADS/$dep.partial" "$DOWNLOADS/$dep"
  done
  # Pigweed serves TFLM's own tests only; an empty folder keeps the Makefile from cloning it.
  mkdir -p "$DOWNLOADS/pigweed"
fi

say "building libtensorflow-microlite.a (reference kernels)"
# The Makefile runs python3 scripts that import numpy and PIL: PYTHON's environment has both.
PATH=$(dirname "$PYTHON"):$PATH
export PATH
(cd "$TFLM" && make -s -f "$MAKEFILE" -j"$JOBS" microlite)
LIB=$(cd "$TFLM" && find gen -name libtensorflow-microlite.a -path '*_default_*' | head -n 1)
[ -n "$LIB" ] || { echo "libtensorflow-microlite.a was not built" >&2; exit 1; }
flags() { (cd "$TFLM" && make -s -f "$MAKEFILE" "print-$1" | sed -n "s/^$1=//p"); }
CXXFLAGS=$(flags CXXFLAGS)
INCLUDES=$(flags INCLUDES)

WORK=$BUILD/host
mkdir -p "$WORK"
"$PYTHON" "$REPO/tools/tflm_host/tflm_check.py" prepare "$HEADER" "$TILE" "$WORK"

build_host() {  # $1: arena bytes
  # shellcheck disable=SC2086
  (cd "$TFLM" && g++ $CXXFLAGS -O2 $INCLUDES -I"$(dirname "$HEADER")" \
    -DEDGESEG_MODEL_HEADER="\"$(basename "$HEADER")\"" -DEDGESEG_OPS_INC="\"$WORK/ops.inc\"" \
    -DEDGESEG_ARENA_BYTES="$1" "$REPO/tools/tflm_host/main.cc" "$SOURCE" "$LIB" -lm \
    -o "$WORK/edgeseg_tflm_host")
}

say "host program, 8 MiB arena"
build_host $((8 * 1024 * 1024))
"$WORK/edgeseg_tflm_host" "$WORK/tile.rgb" "$WORK/scores.int8" "$WORK/input.int8" | tee "$WORK/run1.txt"
USED=$(sed -n 's/^arena_used_bytes //p' "$WORK/run1.txt")
say "host program, arena_used_bytes() + 16 = $((USED + 16)) bytes"
build_host $((USED + 16))
"$WORK/edgeseg_tflm_host" "$WORK/tile.rgb" "$WORK/scores.int8" "$WORK/input.int8"

say "TFLM against LiteRT on the same input tensor"
"$PYTHON" "$REPO/tools/tflm_host/tflm_check.py" compare "$SOURCE" "$TILE" "$WORK/input.int8" \
  "$WORK/scores.int8"
