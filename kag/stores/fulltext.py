"""Full-text BM25 index over chunk title + text, in a Tantivy index folder."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from kag.errors import DataDirLockedError, StoreError
from kag.records import IndexedChunk, ScoredChunk

#: untokenized fields: exact-match filters and the identity of each hit
KEY_FIELDS = ("chunk_id", "document_id", "collection")
#: tantivy's built-in English analyzer: simple tokenizer, remove_long(40), lowercase, Porter stemmer
TEXT_TOKENIZER = "en_stem"
#: a long pasted query becomes a huge disjunction; beyond this many distinct terms, extra ones add
#: cost without changing the ranking much
MAX_QUERY_TERMS = 128

_PHRASE = re.compile(r'"([^"]+)"')
_REINDEX_HINT = "run `kag reindex` to rebuild the full-text index from the ledger"


def _schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    for name in KEY_FIELDS:
        builder.add_text_field(name, stored=True, tokenizer_name="raw", index_option="basic")
    # title and text are not stored: the ledger holds the text, the index only ranks
    builder.add_text_field("title", tokenizer_name=TEXT_TOKENIZER)
    builder.add_text_field("text", tokenizer_name=TEXT_TOKENIZER)
    return builder.build()


def _query_analyzer() -> Any:
    """The same token pipeline as `en_stem`, to turn user text into indexed terms."""
    import tantivy

    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


class TantivyIndex:
    """BM25 over chunk title + text; `add` is visible after `commit`, deletes commit at once."""

    def __init__(self, path: Path, *, title_boost: float = 0.5, reset: bool = False) -> None:
        import tantivy

        self._t = tantivy
        self.path = Path(path)
        self.title_boost = title_boost
        self._lock = threading.RLock()
        self._dirty = False
        self._schema = _schema()
        self._analyzer = _query_analyzer()
        context = {"path": str(self.path)}
        if reset:
            self._remove()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(self._schema, path=str(self.path), reuse=True)
        except (OSError, ValueError) as exc:
            hint = _REINDEX_HINT if "schema" in str(exc).lower() else None
            raise StoreError(f"cannot open the full-text index at {self.path}: {exc}", hint=hint, **context) from exc
        try:
            # one writer for the object's lifetime: tantivy allows one per index folder
            self._writer: Any = self._index.writer()
        except ValueError as exc:
            if "LockBusy" in str(exc):
                raise DataDirLockedError(
                    f"the full-text index at {self.path} is in use by another writer",
                    hint="stop the other kag process (server or ingest job), or point KAG_DATA_DIR elsewhere",
                    **context,
                ) from exc
            raise StoreError(f"cannot open the full-text index writer: {exc}", **context) from exc
        self._index.reload()

    def _remove(self) -> None:
        """Delete the index folder, unless another process holds its writer."""
        t = self._t
        if t.Index.exists(str(self.path)):
            try:
                # taking the writer lock proves nobody else writes here; a stale schema does not matter
                t.Index.open(str(self.path)).writer()
            except ValueError as exc:
                if "LockBusy" in str(exc):
                    raise DataDirLockedError(
                        f"cannot reset the full-text index at {self.path}: it is in use by another writer",
                        hint="stop the other kag process (server or ingest job) first",
                        path=str(self.path),
                    ) from exc
        shutil.rmtree(self.path, ignore_errors=True)

    # -- writes ----------------------------------------------------------------------------

    def _live_writer(self) -> Any:
        if self._writer is None:
            raise StoreError("the full-text index is closed", path=str(self.path))
        return self._writer

    def add(self, chunks: Sequence[IndexedChunk]) -> None:
        """Index chunks; an already indexed chunk id is replaced, never duplicated."""
        if not chunks:
            return
        t = self._t
        with self._lock:
            writer = self._live_writer()
            try:
                for chunk in chunks:
                    # a delete only hits documents added before it, so delete-then-add replaces
                    writer.delete_documents_by_term("chunk_id", chunk.chunk_id)
                    writer.add_document(
                        t.Document(
                            chunk_id=chunk.chunk_id,
                            document_id=chunk.document_id,
                            collection=chunk.collection,
                            title=chunk.title,
                            text=chunk.text,
                        )
                    )
            except ValueError as exc:
                raise StoreError(f"cannot add chunks to the full-text index: {exc}", path=str(self.path)) from exc
            self._dirty = True

    def commit(self) -> None:
        """Make every staged write durable and visible to searches."""
        with self._lock:
            writer = self._live_writer()
            if not self._dirty:
                return
            try:
                writer.commit()
                self._index.reload()
            except ValueError as exc:
                raise StoreError(f"cannot commit the full-text index: {exc}", path=str(self.path)) from exc
            self._dirty = False

    def _delete_terms(self, field: str, values: Sequence[str]) -> None:
        if not values:
            return
        with self._lock:
            writer = self._live_writer()
            try:
                for value in values:
                    writer.delete_documents_by_term(field, value)
            except ValueError as exc:
                raise StoreError(f"cannot delete from the full-text index: {exc}", path=str(self.path)) from exc
            # deletes commit at once so removed chunks never linger in search results
            self._dirty = True
            self.commit()

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        self._delete_terms("chunk_id", chunk_ids)

    def delete_documents(self, document_ids: Sequence[str]) -> None:
        self._delete_terms("document_id", document_ids)

    def delete_collection(self, collection: str) -> None:
        self._delete_terms("collection", [collection])

    def clear(self) -> None:
        """Remove every document (used by `kag reindex`)."""
        with self._lock:
            writer = self._live_writer()
            try:
                writer.delete_all_documents()
            except ValueError as exc:
                raise StoreError(f"cannot clear the full-text index: {exc}", path=str(self.path)) from exc
            self._dirty = True
            self.commit()

    def close(self) -> None:
        """Commit staged writes and release the writer lock."""
        with self._lock:
            if self._writer is None:
                return
            try:
                self.commit()
                self._writer.wait_merging_threads()
            finally:
                # dropping the last reference to the writer releases the folder's lock
                self._writer = None

    def __enter__(self) -> TantivyIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------------

    def _terms(self, text: str) -> list[str]:
        return list(dict.fromkeys(self._analyzer.analyze(text)))

    def _text_query(self, query: str) -> Any | None:
        """Built from analyzed terms, never parsed: any user string is a safe query."""
        t, schema = self._t, self._schema
        terms = self._terms(query)[:MAX_QUERY_TERMS]
        if not terms:
            return None
        clauses = []
        for term in terms:
            clauses.append((t.Occur.Should, t.Query.term_query(schema, "text", term)))
            if self.title_boost > 0:
                title = t.Query.term_query(schema, "title", term)
                clauses.append((t.Occur.Should, t.Query.boost_query(title, self.title_boost)))
        for phrase in _PHRASE.findall(query):
            # a quoted phrase also matches the terms above; its exact occurrence ranks higher
            words = self._analyzer.analyze(phrase)
            if len(words) > 1:
                clauses.append((t.Occur.Should, t.Query.phrase_query(schema, "text", words)))
        return t.Query.boolean_query(clauses)

    def _filter(self, field: str, values: Collection[str]) -> Any:
        t = self._t
        # a filter must not change scores: zero-weight so only BM25 of the text query ranks
        return t.Query.const_score_query(t.Query.term_set_query(self._schema, field, sorted(values)), 0.0)

    def search(
        self,
        query: str,
        k: int,
        collections: Collection[str],
        document_ids: Collection[str] | None = None,
    ) -> list[ScoredChunk]:
        """Top-k by BM25 among chunks whose collection is in `collections`."""
        if k <= 0 or not collections or (document_ids is not None and not document_ids):
            return []  # no accessible collection (or document) means no result, never "all"
        text_query = self._text_query(query)
        if text_query is None:
            return []
        t = self._t
        clauses = [(t.Occur.Must, text_query), (t.Occur.Must, self._filter("collection", collections))]
        if document_ids is not None:
            clauses.append((t.Occur.Must, self._filter("document_id", document_ids)))
        try:
            searcher = self._index.searcher()
            hits = searcher.search(t.Query.boolean_query(clauses), limit=k).hits
            return [self._scored(score, searcher.doc(address)) for score, address in hits]
        except ValueError as exc:
            raise StoreError(f"full-text search failed: {exc}", path=str(self.path)) from exc

    @staticmethod
    def _scored(score: float, doc: Any) -> ScoredChunk:
        return ScoredChunk(
            chunk_id=doc.get_first("chunk_id") or "",
            score=float(score),
            document_id=doc.get_first("document_id") or "",
            collection=doc.get_first("collection") or "",
        )

    def chunk_ids(self, collection: str | None = None) -> set[str]:
        """Every committed chunk id (optionally of one collection), for `kag doctor`."""
        t = self._t
        searcher = self._index.searcher()
        total = searcher.num_docs
        if total == 0:
            return set()
        query = t.Query.all_query() if collection is None else self._filter("collection", [collection])
        hits = searcher.search(query, limit=total, count=False).hits
        return {str(searcher.doc(address).get_first("chunk_id")) for _, address in hits}

    def count(self) -> int:
        """Number of committed chunks."""
        return int(self._index.searcher().num_docs)
