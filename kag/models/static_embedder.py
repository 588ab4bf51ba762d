"""A static (token-lookup) embedder distilled offline from the sentence-transformers model, for short texts.

Entity names are a few words each and there are many of them (about 20 per chunk on SciFact):
through the transformer they cost more CPU than the chunks themselves. model2vec distils the
model once into a table of one vector per vocabulary token (the transformer's output for each
token alone, PCA-reduced and weighted by token rarity); a name's vector is then the mean of its
tokens' rows, hundreds of times cheaper than a forward pass. The distilled model is written to
the cache folder on first use, keyed by the source model's fingerprint, and is deterministic:
the same source model gives the same table.

Its vectors live in another space than the transformer's (`dim` differs), so names embedded by it
are only compared with names or queries embedded by it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kag.errors import MissingDependencyError, ModelLoadError
from kag.models.embedder import bundled_embedding_model_path, default_cache_dir

log = logging.getLogger(__name__)

#: PCA dimensions of the distilled table: model2vec's default, and unlike the 384 of the source
#: model, so a name vector stored by one can never be read as the other's.
STATIC_DIMS = 256
DISTILL_VERSION = 1


class StaticEmbedder:
    """model2vec static embeddings distilled from a local sentence-transformers model; thread-safe."""

    def __init__(
        self, model_path: str | None = None, *, cache_dir: str | Path | None = None, pca_dims: int = STATIC_DIMS
    ) -> None:
        if pca_dims < 2:
            raise ValueError("pca_dims must be >= 2")
        self.model_path = model_path or bundled_embedding_model_path()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.pca_dims = pca_dims
        self._name = f"{model_path or 'sentence-transformers/all-MiniLM-L6-v2'}+model2vec{pca_dims}"
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        self.warm_up()
        return int(self._model.dim)

    def distilled_path(self) -> Path:
        """Where the distilled table of this source model is cached."""
        from kag.models.onnx_runtime import model_fingerprint

        cache = self.cache_dir or default_cache_dir() / "static"
        key = f"{model_fingerprint(self.model_path)}-m2v{DISTILL_VERSION}-{self.pca_dims}"
        return cache / key

    def warm_up(self) -> None:
        """Load the distilled table, distilling it first if it is not cached (about a minute on 2 cores)."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            try:
                from model2vec import StaticModel
            except ImportError as exc:
                raise MissingDependencyError(
                    "model2vec is not installed", hint="pip install 'model2vec[distill]'", stage="graph"
                ) from exc
            path = self.distilled_path()
            if not (path / "config.json").is_file():
                self._distill(path)
            try:
                self._model = StaticModel.from_pretrained(str(path))
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load the distilled name embedder from {path}: {exc}",
                    hint=f"delete {path}; it is distilled again on the next start",
                ) from exc

    def _distill(self, dest: Path) -> None:
        try:
            from model2vec.distill import distill_from_model
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError(
                "model2vec's distillation extra is not installed", hint="pip install 'model2vec[distill]'"
            ) from exc
        import torch

        log.info("distilling a static name embedder from %s into %s", self.model_path, dest)
        try:
            # the transformer inside the sentence-transformers folder; local files only
            model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            torch.manual_seed(0)
            static = distill_from_model(
                model=model,
                tokenizer=tokenizer,  # type: ignore[arg-type]  # a fast tokenizer for BERT-family models
                pca_dims=self.pca_dims,
                device="cpu",
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot distill a static embedder from {self.model_path}: {exc}",
                hint="set KAG_GRAPH_NAME_EMBEDDER=model to embed names with the embedding model instead",
            ) from exc
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
        try:
            static.save_pretrained(str(partial))
            try:
                os.replace(partial, dest)
            except OSError:
                if not (dest / "config.json").is_file():  # another process won the race: keep its copy
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self._model.encode(list(texts), show_progress_bar=False), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)

    def close(self) -> None:
        self._model = None
