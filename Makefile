# sam2trt: install, demo and tests on a fresh machine (CPU; TensorRT is optional).
# pip installs into the active virtual environment (or conda env). Without one, into a
# project .venv, created on first use: system Pythons on Debian/Ubuntu refuse pip (PEP 668).
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PYTHON ?= python3
else
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
endif
PIP = $(PYTHON) -m pip
VIDEO ?= ../shared/videos/vtest.avi
MODEL ?= engines/sam2.1_hiera_t_random
OUT ?= out

.PHONY: install demo test test-parity test-fast bench clean

ifneq ($(VENV),)
$(VENV):
	python3 -m venv $(VENV) || { echo "error: cannot create $(VENV): install python3-venv (apt-get install python3-venv) or activate a virtual environment" >&2; exit 1; }
endif

# torch==2.13.0 must be the CPU wheel: install it first so nothing pulls a CUDA build.
# The official sam2 package goes in with --no-deps (its torchvision pin pulls CUDA torch;
# video prediction does not use torchvision) and --no-build-isolation (an isolated build
# environment would fetch the newest torch, a CUDA build, just to build it).
install: $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps --no-build-isolation sam2==1.1.0
	$(PIP) install -q -e '.[export,test]'

# Export SAM 2.1 tiny with random weights (no checkpoint needed) and track two pedestrians.
demo: install
	@test -f $(MODEL)/model.json || $(PYTHON) -m sam2trt.cli export --config sam2.1_hiera_t --random-weights --out $(MODEL)
	$(PYTHON) -m sam2trt.cli track $(VIDEO) --model $(MODEL) --box 250,215,36,97 --box 636,238,50,85 \
		--max-frames 20 --out $(OUT)/masked.mp4 --masks-dir $(OUT)/masks --json $(OUT)/track.jsonl

# $(call pytest,ARGS): pytest -ra ARGS, its exit 5 (no tests collected) turned into a failure.
pytest = $(PYTHON) -m pytest -ra $(1); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

# make test: everything but the long parity cases (marked parity: real frames tracked
# twice, against the official predictor or fp16/bf16 against fp32); make test-parity runs those.
# CI (.ci/run) runs both.
test: install
	$(call pytest,--durations=25 -m "not parity")

test-parity: install
	$(call pytest,--durations=25 -m parity)

# Everything but the tests marked slow (they need torch and sam2: they export a model, run the
# official predictor or compare with PyTorch); runs without torch installed.
test-fast:
	$(call pytest,-m "not slow")

clean:
	rm -rf $(OUT) build *.egg-info .pytest_cache
