#!/usr/bin/env bash
# The device runtime on arm64 as on a Raspberry Pi (Debian 12 bookworm arm64, Python 3.11),
# under QEMU user-mode emulation, against the same runs on this machine.
#
#   scripts/check_arm64.sh
#
# Steps: build the arm64 root once (mmdebstrap; reused while its folder exists), install
# python3, pip and venv there, pip-install ".[device,geo]" from this checkout into a venv in
# it, then run `edgeseg-run predict` on the same images on this machine and in the arm64 root
# and compare every mask pixel by pixel; the raw int8 outputs of the int8 model are compared
# too (ARM kernels may round differently: counts of values one step apart are printed).
# Emulated timings say nothing about a real board: none are printed.
#
# Environment:
#   EDGESEG_ARM64_ROOT    folder for the arm64 root (required; built when missing, then cached)
#   EDGESEG_CHECK_DIR     work folder: models, images, masks (default: a folder under /tmp)
#   EDGESEG_MODELS        folder from scripts/make_tiny_models.py (default: made in the work
#                         folder: a small model trained on generated scenes, float and QAT int8)
#   EDGESEG_THIRD_PARTY_MODEL  a third-party .tflite checked the same way, e.g. MediaPipe's
#                         selfie_segmentation.tflite (skipped with a line when unset)
#   EDGESEG_THIRD_PARTY_ARGS   its edgeseg-run options (default for MediaPipe's selfie model:
#                         "--scale 0.00392157 --output-kind sigmoid --classes person")
#   EDGESEG_ARM64_CPU     CPU that QEMU emulates, and that the root's /proc/cpuinfo names
#                         (default cortex-a72, the Raspberry Pi 4's core)
#   DEBIAN_MIRROR         default http://deb.debian.org/debian
#   PYTHON                Python on this machine with edgeseg[train] installed (default
#                         .venv/bin/python)
#
# Needs root (chroot, mounts), mmdebstrap, qemu-user-static and binfmt-support (the
# aarch64 handler is registered here when binfmt_misc can be mounted).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${EDGESEG_ARM64_ROOT:?set EDGESEG_ARM64_ROOT to the folder that holds (or will hold) the arm64 root}
CHECK=${EDGESEG_CHECK_DIR:-$(mktemp -d /tmp/edgeseg-arm64.XXXXXX)}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CPU=${EDGESEG_ARM64_CPU:-cortex-a72}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
THIRD_ARGS=${EDGESEG_THIRD_PARTY_ARGS:---scale 0.00392157 --output-kind sigmoid --classes person}
X86_RUN=$(dirname "$PYTHON")/edgeseg-run
mkdir -p "$CHECK"
CHECK=$(cd "$CHECK" && pwd)

say() { printf '== %s\n' "$*"; }

# --- QEMU for aarch64 binaries --------------------------------------------------------------
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || { echo "binfmt_misc cannot be mounted here: run as root on a host that allows it" >&2; exit 2; }
  update-binfmts --enable qemu-aarch64
fi
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || { echo "the qemu-aarch64 handler lacks the F flag (install qemu-user-static)" >&2; exit 2; }

# --- the arm64 root ---------------------------------------------------------------------------
if [ ! -f "$ROOT/.edgeseg-root-complete" ]; then
  say "building the arm64 root (Debian 12 bookworm) in $ROOT"
  rm -rf "$ROOT.partial"
  nice -n 19 mmdebstrap --mode=root --arch=arm64 --variant=apt \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT.partial" "$MIRROR"
  rm -rf "$ROOT"
  mv "$ROOT.partial" "$ROOT"
  touch "$ROOT/.edgeseg-root-complete"
fi

# A /proc/cpuinfo that names an ARM core: under qemu-user the guest reads the host's x86 one,
# and LiteRT then dies of a segmentation fault in XNNPACK's CPU detection at the first model
# it loads (QEMU_CPU alone does not help; this file alone does). QEMU_CPU makes the emulated
# core the one named here (Cortex-A72, ARMv8.0-A without dot product: part 0xd08), so XNNPACK
# picks the kernels it would pick on a Raspberry Pi 4.
case "$CPU" in
  cortex-a53) PART=0xd03 ;; cortex-a72) PART=0xd08 ;; cortex-a76) PART=0xd0b ;;
  *) echo "EDGESEG_ARM64_CPU: cortex-a53, cortex-a72 or cortex-a76" >&2; exit 2 ;;
esac
CPUINFO="$ROOT/etc/edgeseg-cpuinfo"
for i in 0 1 2 3; do
  printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
  printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
  printf 'CPU part\t: %s\nCPU revision\t: 3\n\n' "$PART"
done > "$CPUINFO"

# Run a command in the root: its own mount namespace (the mounts vanish with it), the
# emulated CPU named, the work folder at /check and the checkout's copy at /src.
in_root() {
  # shellcheck disable=SC2016  # the script in quotes expands its own arguments
  unshare --mount --propagation private /bin/sh -euc '
    root=$1; check=$2; cpuinfo=$3; cpu=$4; shift 4
    mount -t proc proc "$root/proc"
    mount --bind "$cpuinfo" "$root/proc/cpuinfo"
    mount --rbind /dev "$root/dev"
    mount -t sysfs sysfs "$root/sys"
    mkdir -p "$root/check"
    mount --bind "$check" "$root/check"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    exec chroot "$root" /usr/bin/env -i QEMU_CPU="$cpu" HOME=/root LANG=C.UTF-8 \
      PATH=/opt/edgeseg/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
      PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
      ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
      ${no_proxy:+no_proxy=$no_proxy} ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} "$@"
  ' in_root "$ROOT" "$CHECK" "$CPUINFO" "$CPU" "$@"
}

# The CA certificates added on this machine (/usr/local/share/ca-certificates: a TLS-inspecting
# proxy's, for one) are trusted in the root too, so that pip reaches the package index.
LOCAL_CA=/usr/local/share/ca-certificates
if compgen -G "$LOCAL_CA/*.crt" > /dev/null \
   && ! diff -rq "$LOCAL_CA" "$ROOT$LOCAL_CA" > /dev/null 2>&1; then
  say "trusting this machine's local CA certificates in the root"
  rm -rf "${ROOT:?}$LOCAL_CA" && cp -r "$LOCAL_CA" "$ROOT$LOCAL_CA"
  in_root update-ca-certificates > /dev/null
fi

# shellcheck disable=SC2016
say "arm64 root: $(in_root /bin/sh -c 'uname -m; . /etc/os-release; echo "$PRETTY_NAME"; python3 --version' | tr '\n' ' ')"

# --- edgeseg[device,geo] from this checkout into a venv in the root ---------------------------
say "pip install .[device,geo] into the root's /opt/edgeseg"
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
   | xargs -0 -I{} sh -c 'test -f "{}" && printf "%s\0" "{}"' \
   | tar --null -T - -cf -) | tar -xf - -C "$ROOT/src"
in_root /bin/sh -c 'test -x /opt/edgeseg/bin/python || python3 -m venv /opt/edgeseg'
in_root nice -n 19 /opt/edgeseg/bin/python -m pip install -q --disable-pip-version-check \
  "/src[device,geo]"
in_root /opt/edgeseg/bin/python -c \
  'import ai_edge_litert, numpy, rasterio, platform; print("arm64 venv:", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__, "rasterio", rasterio.__version__)'

# --- models and images, made on this machine --------------------------------------------------
MODELS=${EDGESEG_MODELS:-$CHECK/tiny}
if [ ! -f "$MODELS/export/model_qat_int8.tflite" ]; then
  say "making the test models in $MODELS"
  nice -n 19 "$PYTHON" "$REPO/scripts/make_tiny_models.py" "$MODELS"
fi
rm -rf "$CHECK/in" && mkdir -p "$CHECK/in"
cp "$MODELS/export/model_fp32.tflite" "$MODELS/export/model_qat_int8.tflite" "$CHECK/in/"
cp -r "$MODELS/images" "$CHECK/in/images"
NAMES="model_fp32 model_qat_int8"
declare -A ARGS=([model_fp32]="" [model_qat_int8]="")
if [ -n "${EDGESEG_THIRD_PARTY_MODEL:-}" ]; then
  cp "$EDGESEG_THIRD_PARTY_MODEL" "$CHECK/in/third_party.tflite"
  NAMES="$NAMES third_party"
  ARGS[third_party]=$THIRD_ARGS
else
  say "EDGESEG_THIRD_PARTY_MODEL not set: no third-party model checked"
fi

# --- predict on both, compare ----------------------------------------------------------------
rm -rf "$CHECK/x86" "$CHECK/arm64"
for name in $NAMES; do
  say "predict $name on x86_64 and on arm64"
  # shellcheck disable=SC2086
  nice -n 19 "$X86_RUN" predict "$CHECK/in/$name.tflite" "$CHECK/in/images" \
    --out "$CHECK/x86/$name" --quiet ${ARGS[$name]}
  # shellcheck disable=SC2086
  in_root nice -n 19 edgeseg-run predict "/check/in/$name.tflite" /check/in/images \
    --out "/check/arm64/$name" --quiet ${ARGS[$name]}
  # shellcheck disable=SC2086
  nice -n 19 "$PYTHON" "$REPO/scripts/raw_outputs.py" run "$CHECK/in/$name.tflite" \
    "$CHECK/in/images" --out "$CHECK/x86/$name.npz" ${ARGS[$name]}
  # shellcheck disable=SC2086
  in_root nice -n 19 python /src/scripts/raw_outputs.py run "/check/in/$name.tflite" \
    /check/in/images --out "/check/arm64/$name.npz" ${ARGS[$name]}
done

say "agreement of arm64 with x86_64"
status=0
for name in $NAMES; do
  "$PYTHON" "$REPO/scripts/raw_outputs.py" compare "$CHECK/x86/$name" "$CHECK/arm64/$name" \
    --raw "$CHECK/x86/$name.npz" "$CHECK/arm64/$name.npz" --name "$name" || status=1
done
say "work folder: $CHECK"
exit $status
