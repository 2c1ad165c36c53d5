# edgeseg: every target installs what it needs into .venv itself (only Python and PyPI needed).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint bench bench-train bench-levers bench-recipes bench-throughput bench-multiworker clean \
	check-arm64 check-tflm check-accelerators

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

## demo: train -> QAT -> export -> tiled device inference -> validation, on generated scenes
demo: $(STAMP)
	$(BIN)/edgeseg demo --out runs/demo

## test: lint, then the whole test suite
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25

lint: $(STAMP)
	$(BIN)/ruff check edgeseg export firmware_bridge tests examples benchmarks scripts tools

## bench: benchmarks on the Dubai aerial set (EDGESEG_DATA, and EDGESEG_WEIGHTS for training);
## prints JSON and a markdown table. Uses RUN (trains the default recipe first when it is
## missing) and its QAT model.
RUN    ?= runs/train_bench/imagenet
export EDGESEG_CLASSES ?= $(abspath examples/dubai_classes.csv)
bench: $(STAMP)
	@test -d "$(EDGESEG_DATA)/images" || { echo "set EDGESEG_DATA to the Dubai aerial dataset folder" >&2; exit 2; }
	test -f $(RUN)/config.json || ONLY=imagenet benchmarks/train_compare.sh
	test -f $(RUN)/qat/qat.json || $(BIN)/edgeseg qat $(RUN) --data $(EDGESEG_DATA) \
		--classes $(EDGESEG_CLASSES)
	$(BIN)/edgeseg bench --run $(RUN) --out runs/bench

clean:
	rm -rf runs .pytest_cache .ruff_cache

## bench-train: edgeseg train against a plain tf-keras script, both at the same time, on Dubai
## (EDGESEG_DATA, EDGESEG_WEIGHTS): budgets of 5 and 15 minutes, seeds 0 and 1 (about 50 minutes)
bench-train: $(STAMP)
	$(BIN)/python benchmarks/train_vs_peer.py

## bench-levers: the default recipe against stronger colour jitter and 384 px crops and tiles, all
## three trained at the same time for 15 minutes, seeds 0 and 1, on Dubai (about 40 minutes)
bench-levers: $(STAMP)
	$(BIN)/python benchmarks/train_levers.py --variant colour2="--colour-jitter 2" \
		--variant crop384="--crop 384"

## bench-recipes: four training recipes on Dubai, same budget each (about an hour)
bench-recipes: $(STAMP)
	benchmarks/train_compare.sh

## bench-throughput: every export format against TensorFlow through the same tiled path, and
## OpenVINO's float32 and int8 time by operation type (a few minutes)
bench-throughput: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/openvino_ops.py

## bench-multiworker: two training workers on localhost against one process, same steps (a few minutes)
bench-multiworker: $(STAMP)
	$(BIN)/python benchmarks/multiworker_train.py

## check-arm64: the device runtime on Debian 12 arm64 (Python 3.11, as on a Raspberry Pi) under
## QEMU, masks compared pixel by pixel with this machine's; needs root, mmdebstrap and
## qemu-user-static. EDGESEG_ARM64_ROOT: folder for the arm64 root (built once, then reused);
## EDGESEG_THIRD_PARTY_MODEL: a third-party .tflite to check too (see scripts/check_arm64.sh)
check-arm64: $(STAMP)
	PYTHON=$(abspath $(BIN)/python) scripts/check_arm64.sh

## check-tflm: the C array on TensorFlow Lite Micro (reference kernels, built for this machine)
## against LiteRT on one tile. TFLM_SRC: a tflite-micro source tree; TFLM_DEPS: its third-party
## sources for machines without internet (see scripts/check_tflm.sh). Trains the small test
## model first when CHECK_MODELS does not hold it.
CHECK_MODELS ?= runs/check_models
check-tflm: $(STAMP)
	test -f $(CHECK_MODELS)/export/model.cc || $(BIN)/python scripts/make_tiny_models.py $(CHECK_MODELS)
	PYTHON=$(abspath $(BIN)/python) scripts/check_tflm.sh $(CHECK_MODELS)/export/model.cc \
		$(CHECK_MODELS)/tile.png

## check-accelerators: on a machine with an NVIDIA GPU, ONNX Runtime's CUDA and TensorRT providers
## (and OpenVINO's GPU plugin on an Intel GPU) against the CPU: every mask pixel by pixel, per-tile
## latency and streamed rate. Installs its own venv from PyPI (onnxruntime-gpu at the pinned
## version); without a GPU it says so and exits 0, not run (see scripts/check_accelerators.sh)
check-accelerators:
	PYTHON=$(PYTHON) scripts/check_accelerators.sh
