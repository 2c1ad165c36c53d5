#!/usr/bin/env bash
# The device runtime on GPUs: ONNX Runtime's CUDA and TensorRT execution providers on an NVIDIA
# GPU (and OpenVINO's GPU plugin on an Intel GPU), each mask compared pixel by pixel with the
# CPU's, with per-tile latency and streamed rate.
#
#   scripts/check_accelerators.sh              # on a machine with a GPU
#   scripts/check_accelerators.sh --self-test  # anywhere: the CPU stands in for the GPU
#
# Steps: find the GPUs (nvidia-smi -L; Intel GPUs under /sys/class/drm). None: say so and exit
# 0, "not run". Else make a venv and pip-install this checkout's [device,geo] into it, with
# onnxruntime-gpu at the onnxruntime version pyproject.toml pins (PyPI's build for CUDA 13 and
# cuDNN 9; its [cuda,cudnn] extras bring those libraries, loaded by the runtime through
# onnxruntime.preload_dlls), TensorRT's libraries at the major version the TensorRT provider
# links (tensorrt-cuNN-libs, unless the system has them), and openvino only where an Intel GPU
# is present (its GPU plugin is Intel's). Write the test models (tests/tiny_models.py's network
# as ONNX, float and with int8 input and output, dynamic size, run in 256 px tiles) and two
# generated scenes, plus the models of EDGESEG_ACCEL_MODELS; then for each model run
# `edgeseg-run predict` on the CPU and on each GPU configuration, compare every mask with the
# CPU's pixel by pixel, and run `edgeseg-run bench` on each (per-tile latency, the runtime
# alone, MPix/s streamed through a generated GeoTIFF). The configurations:
#   cuda          --providers CUDAExecutionProvider
#   tensorrt      --providers TensorrtExecutionProvider,CUDAExecutionProvider
#   litert-gpu    --delegate LIB, only for a GPU delegate library the ai-edge-litert wheel
#                 ships (ai-edge-litert 2.3.0 ships none for Linux x86-64: skipped, with a line)
#   openvino-gpu  --device GPU on the OpenVINO IR, only with an Intel GPU
# The GPUs compute in TF32 (CUDA, TensorRT) or f16 (OpenVINO GPU, LiteRT GPU) where the CPU
# computes in float32, so masks may differ where two classes nearly tie: the tolerance is a
# share of the pixels.
#
# Exit status: 0 when every mask is within the tolerance (and when there is no GPU: not run);
# 1 when a mask differs beyond it; 2 when a configuration could not run (an install, the
# driver, a provider that did not start).
#
# Environment:
#   EDGESEG_ACCEL_DIR       work folder: venv, models, masks, bench JSON (default: a new folder
#                           under /tmp; the venv in it is made when missing, else reused)
#   EDGESEG_ACCEL_MODELS    more models to check, space-separated (.onnx, .xml, .tflite), e.g.
#                           the export of a trained run (`edgeseg export --formats onnx-fp32`)
#   EDGESEG_ACCEL_ARGS      their edgeseg-run options (default none)
#   EDGESEG_ACCEL_MAX_DIFF  tolerance for TF32 and float32 runs, per cent of the mask pixels
#                           that may differ from the CPU's (default 0.5)
#   EDGESEG_ACCEL_MAX_DIFF_F16  the same for f16 runs (default 2)
#   EDGESEG_ACCEL_SKIP      configurations to leave out, space-separated (e.g. "tensorrt")
#   EDGESEG_ACCEL_RUNS, EDGESEG_ACCEL_SIZE  bench --runs (default 30) and --size (default 2048)
#   EDGESEG_ACCEL_TIMEOUT   seconds for each edgeseg-run command (default 300)
#   PYTHON                  Python that makes the venv (default python3; 3.10 or newer)
#   NVIDIA_SMI              the nvidia-smi command (default nvidia-smi)
#   EDGESEG_ACCEL_DRM       where Intel GPUs are looked for (default /sys/class/drm)
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
HELPER=$REPO/scripts/check_accelerators.py
HOST_PY=${PYTHON:-python3}
SELF_TEST=0
case "${1:-}" in
  --self-test) SELF_TEST=1 ;;
  "") ;;
  *) echo "usage: $0 [--self-test]" >&2; exit 2 ;;
esac
MAX_DIFF=${EDGESEG_ACCEL_MAX_DIFF:-0.5}
MAX_DIFF_F16=${EDGESEG_ACCEL_MAX_DIFF_F16:-2}
SKIP=" ${EDGESEG_ACCEL_SKIP:-} "
RUNS=${EDGESEG_ACCEL_RUNS:-30}
SIZE=${EDGESEG_ACCEL_SIZE:-2048}
LIMIT=${EDGESEG_ACCEL_TIMEOUT:-300}

say() { printf '== %s\n' "$*"; }

# --- the GPUs ---------------------------------------------------------------------------------
if [ $SELF_TEST = 1 ]; then
  GPUS=""
  say "self-test: the CPU stands in for the GPU configurations (no GPU is checked)"
else
  GPUS=$("$HOST_PY" "$HELPER" gpus) || { echo "cannot look for GPUs with $HOST_PY" >&2; exit 2; }
  if [ -z "$GPUS" ]; then
    echo "no GPU found (nvidia-smi lists no NVIDIA GPU, /sys/class/drm no Intel one): accelerator check not run"
    exit 0
  fi
  say "GPUs:"
  printf '%s\n' "$GPUS"
fi
NVIDIA=0; INTEL=0
grep -q '^nvidia ' <<< "$GPUS" && NVIDIA=1
grep -q '^intel ' <<< "$GPUS" && INTEL=1

WORK=${EDGESEG_ACCEL_DIR:-$(mktemp -d /tmp/edgeseg-accel.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

# --- the venv ---------------------------------------------------------------------------------
pin() { sed -n "s/.*\"$1==\([0-9][0-9.]*\)\".*/\1/p" "$REPO/pyproject.toml" | head -n 1; }
ORT_VERSION=$(pin onnxruntime)
ONNX_VERSION=$(pin onnx)
OV_VERSION=$(pin openvino)
VENV=$WORK/venv
VPY=$VENV/bin/python
RUN=$VENV/bin/edgeseg-run
[ -x "$VPY" ] || "$HOST_PY" -m venv "$VENV" || { echo "cannot make a venv with $HOST_PY" >&2; exit 2; }
PACKAGES=("${REPO}[device,geo]" "onnx==$ONNX_VERSION" pytest)
if [ $NVIDIA = 1 ]; then
  # onnxruntime and onnxruntime-gpu install the same module: only one may be there
  "$VPY" -m pip uninstall -q -y onnxruntime > /dev/null 2>&1
  PACKAGES+=("onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION")
else
  "$VPY" -m pip uninstall -q -y onnxruntime-gpu > /dev/null 2>&1
  PACKAGES+=("onnxruntime==$ORT_VERSION")
fi
[ $INTEL = 1 ] && PACKAGES+=("openvino==$OV_VERSION")
say "pip install into $VENV: ${PACKAGES[*]}"
"$VPY" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}" \
  || { echo "the install failed" >&2; exit 2; }
fact() { "$VPY" "$HELPER" facts "$1"; }

declare -A PROBLEM=()  # configuration -> why it cannot run here
TRT_MAJOR=""
if [ $NVIDIA = 1 ]; then
  ORT_CUDA=$(fact onnxruntime_cuda)
  DRIVER_CUDA=$(fact driver_cuda)
  if [ -z "$ORT_CUDA" ]; then
    PROBLEM[cuda]="$(fact onnxruntime) is not a CUDA build"
  elif [ -n "$DRIVER_CUDA" ] && [ "${DRIVER_CUDA%%.*}" -lt "${ORT_CUDA%%.*}" ]; then
    PROBLEM[cuda]="the NVIDIA driver supports CUDA $DRIVER_CUDA, $(fact onnxruntime) is built for CUDA $ORT_CUDA: update the driver"
  fi
  [ -n "${PROBLEM[cuda]:-}" ] && PROBLEM[tensorrt]=${PROBLEM[cuda]}
  TRT_MAJOR=$(fact tensorrt_major)
  if [ -z "${PROBLEM[tensorrt]:-}" ] && [[ $SKIP != *" tensorrt "* ]]; then
    if [ -z "$TRT_MAJOR" ]; then
      PROBLEM[tensorrt]="$(fact onnxruntime) has no TensorRT provider library"
    elif ! "$VPY" -c "import ctypes; ctypes.CDLL('libnvinfer.so.$TRT_MAJOR')" 2> /dev/null; then
      TRT_PACKAGE="tensorrt-cu${ORT_CUDA%%.*}-libs==$TRT_MAJOR.*"
      say "pip install $TRT_PACKAGE (the TensorRT provider links libnvinfer.so.$TRT_MAJOR)"
      if "$VPY" -m pip install -q --disable-pip-version-check "$TRT_PACKAGE"; then
        TRT_LIBS=$(find "$VENV" -name "libnvinfer.so.$TRT_MAJOR" -printf '%h\n' | head -n 1)
        if [ -n "$TRT_LIBS" ]; then
          export LD_LIBRARY_PATH="$TRT_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        else
          PROBLEM[tensorrt]="$TRT_PACKAGE holds no libnvinfer.so.$TRT_MAJOR"
        fi
      else
        PROBLEM[tensorrt]="TensorRT $TRT_MAJOR libraries could not be installed ($TRT_PACKAGE)"
      fi
    fi
  fi
  # engines built once per model and input shape, reused by the later runs
  export ORT_TENSORRT_ENGINE_CACHE_ENABLE=1 ORT_TENSORRT_CACHE_PATH="$WORK/tensorrt-engines"
  mkdir -p "$ORT_TENSORRT_CACHE_PATH"
  "${NVIDIA_SMI:-nvidia-smi}" 2> /dev/null | sed -n '1,4p'
fi
say "runtimes:"
"$VPY" "$HELPER" facts

# --- models and configurations ----------------------------------------------------------------
say "test models and images in $WORK/models"
"$VPY" "$HELPER" models "$WORK/models" || { echo "cannot write the test models" >&2; exit 2; }
MODELS=("$WORK/models/tiny_fp32.onnx" "$WORK/models/tiny_int8io.onnx" "$WORK/models/tiny_fp32.tflite")
declare -A ARGS=(["$WORK/models/tiny_fp32.onnx"]="--tile 256 --overlap 32"
                 ["$WORK/models/tiny_int8io.onnx"]="--tile 256 --overlap 32"
                 ["$WORK/models/tiny_fp32.tflite"]="")
if [ $INTEL = 1 ]; then
  "$VPY" -c "import sys, openvino as ov; ov.save_model(ov.convert_model(sys.argv[1]), sys.argv[2], compress_to_fp16=False)" \
    "$WORK/models/tiny_fp32.onnx" "$WORK/models/tiny_fp32.xml" \
    && MODELS+=("$WORK/models/tiny_fp32.xml") \
    && ARGS["$WORK/models/tiny_fp32.xml"]="--tile 256 --overlap 32 --mean 127.5 --std 127.5 --classes c0,c1,c2,c3"
fi
for model in ${EDGESEG_ACCEL_MODELS:-}; do
  [ -f "$model" ] || { echo "EDGESEG_ACCEL_MODELS: no file $model" >&2; exit 2; }
  model=$(realpath "$model")
  MODELS+=("$model")
  ARGS["$model"]=${EDGESEG_ACCEL_ARGS:-}
done

# name|model suffix|edgeseg-run options|tolerance (per cent of pixels)
CONFIGS=()
if [ $SELF_TEST = 1 ]; then
  CONFIGS+=("cpu-stand-in|onnx|--providers CPUExecutionProvider|$MAX_DIFF"
            "litert-reference-stand-in|tflite|--kernels reference|$MAX_DIFF")
fi
if [ $NVIDIA = 1 ]; then
  CONFIGS+=("cuda|onnx|--providers CUDAExecutionProvider|$MAX_DIFF"
            "tensorrt|onnx|--providers TensorrtExecutionProvider,CUDAExecutionProvider|$MAX_DIFF")
fi
if [ $SELF_TEST = 0 ]; then
  DELEGATES=$(fact litert_delegates)
  GPU_DELEGATE=$(tr ',' '\n' <<< "$DELEGATES" | grep -i gpu | head -n 1)
  if [ -n "$GPU_DELEGATE" ]; then
    CONFIGS+=("litert-gpu|tflite|--delegate $GPU_DELEGATE|$MAX_DIFF_F16")
  else
    say "litert-gpu: not run: $(fact litert) ships no GPU delegate for the interpreter edgeseg-run uses (none of its libraries exports tflite_plugin_create_delegate; its libLiteRtWebGpuAccelerator.so serves LiteRT's CompiledModel API)"
  fi
fi
if [ $INTEL = 1 ]; then
  CONFIGS+=("openvino-gpu|xml|--device GPU|$MAX_DIFF_F16")
  [[ ,$(fact openvino_devices), == *,GPU* ]] \
    || PROBLEM[openvino-gpu]="OpenVINO sees no GPU (devices: $(fact openvino_devices)): install Intel's GPU compute runtime"
fi
declare -A BASE=([onnx]="--providers CPUExecutionProvider" [xml]="--device CPU" [tflite]="")

# --- predict, compare, bench ------------------------------------------------------------------
RESULTS=$WORK/results.tsv
: > "$RESULTS"
rm -rf "$WORK/masks" "$WORK/bench"
mkdir -p "$WORK/bench"
mismatch=0; incomplete=0
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RESULTS"; }
edgeseg_run() { timeout "$LIMIT" "$RUN" "$@"; }

for model in "${MODELS[@]}"; do
  suffix=${model##*.}; name=$(basename "$model")
  wanted=()
  for config in "${CONFIGS[@]}"; do
    IFS='|' read -r cname csuffix _ _ <<< "$config"
    [ "$csuffix" = "$suffix" ] && [[ $SKIP != *" $cname "* ]] && wanted+=("$config")
  done
  [ ${#wanted[@]} -gt 0 ] || continue
  say "$name on the CPU"
  # shellcheck disable=SC2086  # options are words
  if ! edgeseg_run predict "$model" "$WORK/models/images" --out "$WORK/masks/cpu/$name" --quiet \
       ${BASE[$suffix]} ${ARGS[$model]}; then
    record cpu "$name" "did not run" "" ""; incomplete=1; continue
  fi
  # shellcheck disable=SC2086
  edgeseg_run bench "$model" --runs "$RUNS" --size "$SIZE" --json "$WORK/bench/cpu-$name.json" \
    ${BASE[$suffix]} ${ARGS[$model]} || incomplete=1
  record cpu "$name" "baseline" "" "$WORK/bench/cpu-$name.json"
  for config in "${wanted[@]}"; do
    IFS='|' read -r cname _ options tolerance <<< "$config"
    if [ -n "${PROBLEM[$cname]:-}" ]; then
      say "$cname: not run: ${PROBLEM[$cname]}"
      record "$cname" "$name" "not run: ${PROBLEM[$cname]}" "" ""; incomplete=1; continue
    fi
    say "$name on $cname ($options)"
    masks=$WORK/masks/$cname/$name
    # shellcheck disable=SC2086
    if ! edgeseg_run predict "$model" "$WORK/models/images" --out "$masks" --quiet $options \
         ${ARGS[$model]}; then
      record "$cname" "$name" "did not run (see above)" "" ""; incomplete=1; continue
    fi
    line=$("$VPY" "$HELPER" compare "$WORK/masks/cpu/$name" "$masks" --max-diff "$tolerance" \
           --name "$cname $name")
    rc=$?
    echo "$line"
    diff=$(sed -n 's/.*differ from the CPU.s (\([0-9.]* %\);.*/\1 differ/p' <<< "$line")
    verdict="within $tolerance %"
    [ $rc = 0 ] || { verdict="MISMATCH (over $tolerance %)"; mismatch=1; }
    bench=$WORK/bench/$cname-$name.json
    # shellcheck disable=SC2086
    edgeseg_run bench "$model" --runs "$RUNS" --size "$SIZE" --json "$bench" $options \
      ${ARGS[$model]} || { incomplete=1; bench=""; }
    record "$cname" "$name" "$verdict" "$diff" "$bench"
  done
done

say "summary (work folder $WORK)"
"$VPY" "$HELPER" summary "$RESULTS"
if [ $mismatch = 1 ]; then
  say "accelerator check: MISMATCH: a mask differs from the CPU's beyond its tolerance"
  exit 1
fi
if [ $incomplete = 1 ]; then
  say "accelerator check: incomplete: a configuration did not run (see above)"
  exit 2
fi
if [ $SELF_TEST = 1 ]; then
  say "accelerator check: self-test passed (no GPU checked)"
else
  say "accelerator check: passed"
fi
exit 0
