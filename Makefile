# samjax: every target makes (or reuses) a virtual environment in .venv, so a fresh machine needs only Python 3.11+.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo train default-model figures test test-fast lint bench bench-device bench-tpu bench-data bench-amg clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Core install (JAX, Flax, optax, orbax, grain ...): enough for the demo, inference and training.
$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Everything the test suite needs: the official segment-anything + CPU torch for parity tests, pytest, and the
# official sam2 built without its CUDA extension and without its dependencies (torchvision would not load; the
# [torch] extra has its pure-Python ones).
$(VENV)/.full: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[torch,dev]"
	$(BIN)/pip install -q --no-deps segment-anything-hq==0.3 efficientsam==1.0.0 clip-anytorch==2.6.0
	$(BIN)/pip install -q "setuptools>=68"
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-deps --no-build-isolation sam2==1.1.0
	touch $@ $(VENV)/.core

## demo: the main job on its embedded default: the small SAM samjax ships (trained by `make train`) on held-out
## synthetic images, with the IoU of every mask against the ground truth.
demo: $(VENV)/.core
	$(BIN)/python -m samjax.demo --out out/demo

## test: the whole CPU test suite (parity with the official implementation included).
test: $(VENV)/.full
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: the suite without the real-size architectures.
test-fast: $(VENV)/.full
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## lint: ruff with the repo's settings (pyproject.toml [tool.ruff]) on the package, benchmarks, tests, experiments.
lint: $(VENV)/.full
	$(BIN)/ruff check samjax benchmarks tests experiments

## bench: samjax vs the official PyTorch SAM on this CPU (encoder, prompt-to-mask, automatic masks): ratios.
bench: $(VENV)/.full
	$(BIN)/python -m benchmarks.cpu

## bench-device: encoder / decoder / training-step throughput and MFU on the accelerator of this host (GPU or TPU).
bench-device: $(VENV)/.core
	$(BIN)/python -m benchmarks.device

## bench-tpu: TPU cost-model estimates from ahead-of-time compilation, no TPU needed (separate venv with libtpu).
bench-tpu:
	test -x .venv-tpu/bin/python || ($(PY) -m venv .venv-tpu && .venv-tpu/bin/pip install -q -e ".[tpu]")
	JAX_PLATFORMS=cpu .venv-tpu/bin/python -m benchmarks.tpu_aot

## bench-data: input-pipeline throughput on SA-1B-sized synthetic images (images/s per core).
bench-data: $(VENV)/.core
	$(BIN)/python -m samjax.data.bench

## bench-amg: automatic mask generation, seconds per image, samjax vs the official generator (ViT-B, CPU).
bench-amg: $(VENV)/.full
	$(BIN)/python -m benchmarks.amg

## train: the training main job on its embedded default: synthetic SA-1B, a small SAM from scratch on CPU
## (<= 15 min on 2 cores), evaluation, export to workdir/tiny_synthetic/model and a demo image. Re-run resumes.
train: $(VENV)/.core
	$(BIN)/python -m samjax.train --experiment=tiny_synthetic --workdir=workdir/tiny_synthetic

## default-model: retrain the shipped default model (make train) and copy it into the package with its model card.
default-model: train
	$(BIN)/python -m samjax.weights.default --from workdir/tiny_synthetic

## figures: the README's pictures from the tiny_synthetic model (runs `make train` first when there is no model):
## docs/overlay.png (predictor + automatic masks on a held-out image), docs/curves.png (its training curves).
workdir/tiny_synthetic/model/config.json:
	$(MAKE) train

figures: $(VENV)/.core workdir/tiny_synthetic/model/config.json
	$(BIN)/python -m samjax.figures --model workdir/tiny_synthetic/model --out docs/overlay.png
	$(BIN)/python -m samjax.plot workdir/tiny_synthetic --out docs/curves.png

clean:
	rm -rf $(VENV) .venv-tpu out .pytest_cache
