"""Isolated, cached evaluation data dirs: one per (corpus content, settings that change the index)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kag.errors import EvaluationError
from pipelines.evaluation.datasets import CorpusDoc

COLLECTION = "eval"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def default_work_dir() -> Path:
    """`$XDG_CACHE_HOME/kag/eval`, else `~/.cache/kag/eval`: outside any checkout, shared by runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kag" / "eval"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "dataset"


class EvalWorkspace:
    """A folder with the corpus written as one file per document, a kag data dir, and a manifest.

    The folder name carries the corpus hash and the hash of the index fingerprint (embedder, chunking,
    graph extraction), so settings that only change querying (weights, depth, k, rerank) reuse it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.corpus_dir = self.root / "corpus"
        self.data_dir = self.root / "data"
        self.manifest_path = self.root / "manifest.json"
        self._manifest: dict[str, Any] | None = None

    @classmethod
    def for_corpus(cls, work_dir: Path, dataset_name: str, corpus_sha256: str, fingerprint: str) -> EvalWorkspace:
        index_key = hashlib.sha256(fingerprint.encode()).hexdigest()
        ws = cls(Path(work_dir) / f"{_slug(dataset_name)}-{corpus_sha256[:12]}-{index_key[:12]}")
        ws.root.mkdir(parents=True, exist_ok=True)
        if not ws.manifest_path.exists():
            ws._write({"dataset": dataset_name, "corpus_sha256": corpus_sha256, "fingerprint": fingerprint})
        return ws

    # -- manifest --------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            try:
                self._manifest = json.loads(self.manifest_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise EvaluationError(
                    f"the evaluation cache {self.root} is damaged: {exc}", hint=f"delete {self.root} and run again"
                ) from exc
        return self._manifest

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.manifest_path)
        self._manifest = data

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def mark_complete(self, **info: Any) -> None:
        self._write({**self.manifest, **info, "complete": True})

    # -- corpus files ------------------------------------------------------------------------
    def write_corpus(self, docs: Iterable[CorpusDoc]) -> dict[str, int]:
        """One `.json` (title + text) or `.txt` (no title) file per document; blank documents are skipped."""
        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        skipped = 0
        for doc in docs:
            text = doc.text.strip() or doc.title.strip()
            if not text:
                skipped += 1  # nothing to index; it can never be retrieved, and the metrics say so
                continue
            stem = doc.id if _SAFE.fullmatch(doc.id) else "id-" + hashlib.sha256(doc.id.encode()).hexdigest()[:20]
            if stem in files:
                stem = f"{stem}-{hashlib.sha256(doc.id.encode()).hexdigest()[:8]}"
            if doc.title.strip():
                name, body = f"{stem}.json", json.dumps({"title": doc.title, "text": text}, ensure_ascii=False)
            else:
                name, body = f"{stem}.txt", text
            path = self.corpus_dir / name
            data = body.encode("utf-8")
            if not path.exists() or path.read_bytes() != data:  # unchanged bytes keep ingestion a no-op
                path.write_bytes(data)
            files[name] = doc.id
        self._write({**self.manifest, "files": files, "skipped_blank": skipped})
        return {"documents": len(files), "skipped_blank": skipped}

    def corpus_id(self, source_uri: str) -> str | None:
        """The dataset's id of the document kag ingested from `source_uri`."""
        return self.manifest.get("files", {}).get(Path(source_uri).name)
