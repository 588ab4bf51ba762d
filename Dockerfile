# syntax=docker/dockerfile:1.7
# kag: one image for the API, the Ray head and the Ray workers (they must share code and Ray version).
#
#   docker build -t kag .                                   # CPU (default)
#   docker build -t kag:cuda --build-arg LLAMA_BACKEND=cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#
# The install commands mirror the Makefile's `install` target (same torch, llama-cpp-python and
# CPU flags; tests/test_deploy.py checks that they stay the same).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: compile llama-cpp-python, install kag and its models into /opt/venv -------------------
FROM ${PYTHON_IMAGE} AS build

ARG LLAMA_BACKEND=cpu
ARG LLAMA_VERSION=0.3.36
ARG TORCH_VERSION=2.13.0
# the CPU wheel of torch; any other source pulls several GB of CUDA libraries
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG CUDA_PACKAGE_VERSION=12-6
# llama.cpp built with default flags segfaults on CPUs with AMX (ggml_backend_amx_mul_mat), and an
# image runs on CPUs other than the one that built it: the portable AVX2 baseline, AMX off (build
# with --build-arg CPU_CMAKE_ARGS="$(make -s llama-cmake-args)" for this machine's own levels)
ARG CPU_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
ARG CUDA_CMAKE_ARGS="-DGGML_CUDA=on"

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# the CUDA compiler and cuBLAS headers, from NVIDIA's Debian 12 repository, only for the CUDA build
RUN if [ "$LLAMA_BACKEND" = "cuda" ]; then \
      curl -fsSL -o /tmp/cuda-keyring.deb \
        https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
      && dpkg -i /tmp/cuda-keyring.deb && apt-get update \
      && apt-get install -y --no-install-recommends "cuda-nvcc-${CUDA_PACKAGE_VERSION}" \
           "cuda-cudart-dev-${CUDA_PACKAGE_VERSION}" "libcublas-dev-${CUDA_PACKAGE_VERSION}" \
      && rm -rf /var/lib/apt/lists/* /tmp/cuda-keyring.deb; \
    elif [ "$LLAMA_BACKEND" != "cpu" ]; then echo "LLAMA_BACKEND must be cpu or cuda" >&2; exit 1; fi

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/cuda/bin:$PATH

RUN pip install --upgrade pip setuptools wheel \
 && pip install torch==${TORCH_VERSION} --index-url ${TORCH_INDEX_URL}

RUN if [ "$LLAMA_BACKEND" = "cuda" ]; then export CMAKE_ARGS="$CUDA_CMAKE_ARGS"; else export CMAKE_ARGS="$CPU_CMAKE_ARGS"; fi \
 && pip install --no-deps llama-cpp-python==${LLAMA_VERSION}

WORKDIR /src
COPY pyproject.toml README.md ./
COPY kag ./kag
COPY ingest ./ingest
COPY pipelines ./pipelines
RUN pip install ".[ray]" \
 && python -c "import kag, ingest.ray_executor, ray, llama_cpp, spacy; spacy.load('en_core_web_sm')"

# the embedder's ONNX export (short texts: queries, entity names), made once here instead of at
# every container start; the runtime checks it against torch when it loads it
ENV KAG_EMBEDDING_ONNX_CACHE_DIR=/opt/kag/onnx
RUN python -c "from kag.models.embedder import SentenceTransformerEmbedder as E; from kag.settings import Settings; \
s = Settings(); e = E(s.embedding_model_path, runtime='onnx', onnx_cache_dir=s.embedding_onnx_cache_dir); \
e.warm_up(); assert e.runtime_used == 'onnx', e.runtime_used"

# --- runtime: the venv, the demo corpus, no compiler ------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG LLAMA_BACKEND=cpu
ARG CUDA_PACKAGE_VERSION=12-6

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 ca-certificates curl tesseract-ocr \
 && if [ "$LLAMA_BACKEND" = "cuda" ]; then \
      curl -fsSL -o /tmp/cuda-keyring.deb \
        https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
      && dpkg -i /tmp/cuda-keyring.deb && apt-get update \
      && apt-get install -y --no-install-recommends "cuda-cudart-${CUDA_PACKAGE_VERSION}" "libcublas-${CUDA_PACKAGE_VERSION}" \
      && rm -f /tmp/cuda-keyring.deb; \
    fi \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/kag/onnx /opt/kag/onnx
COPY data /opt/kag/data

# models come from the installed packages; nothing may reach for a model hub
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    KAG_DATA_DIR=/var/lib/kag \
    KAG_EMBEDDING_ONNX_CACHE_DIR=/opt/kag/onnx \
    KAG_API_HOST=0.0.0.0 \
    PORT=8000

RUN useradd --create-home --uid 1000 kag && mkdir -p /var/lib/kag && chown kag:kag /var/lib/kag
USER kag
WORKDIR /home/kag
VOLUME ["/var/lib/kag"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/readyz" || exit 1

# `kag migrate` brings the ledger schema up to date; `kag serve` listens on $PORT of every interface
# (KAG_API_HOST=0.0.0.0: the default 127.0.0.1 would be the container's own loopback, unreachable)
CMD ["sh", "-c", "kag migrate && exec kag serve"]
