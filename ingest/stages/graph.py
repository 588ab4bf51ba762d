"""Stage 2: the knowledge graph of indexed documents: entities, mentions, relations, name vectors.

It runs after stage 1 has made the documents searchable: in the same `kag ingest` run by default,
later with `kag ingest --graph later` then `kag graph build`, and in the API server as a background
task after each upload job. Each document's graph is written in one ledger transaction that also
flips its graph status from `pending` to `done`, so graph retrieval only ever sees finished
documents, and a run killed anywhere resumes with the documents still `pending`: nothing is written
twice and nothing is left half-written. A document whose extraction fails is `failed` with the
reason, and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ingest.protocols import GRAPH, ExtractorLike, StageProgress
from kag.errors import DocumentError, KagError
from kag.ledger.store import Ledger
from kag.models.embedder import Embedder
from kag.records import GraphExtraction
from kag.stores.graph import embed_entity_names

log = logging.getLogger("kag.ingest.graph")


@dataclass
class GraphReport:
    """What one stage-2 run did in a collection."""

    collection: str
    documents_done: int = 0
    documents_failed: int = 0
    #: documents still waiting when the run stopped early (a stop request)
    documents_pending: int = 0
    entities_embedded: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "collection": self.collection,
            "documents_done": self.documents_done,
            "documents_failed": self.documents_failed,
            "documents_pending": self.documents_pending,
            "entities_embedded": self.entities_embedded,
        }


class GraphStage:
    """Extracts the graph of a collection's `pending` documents, one document per transaction."""

    def __init__(self, ledger: Ledger, extractor: ExtractorLike, embedder: Embedder | None = None) -> None:
        self.ledger = ledger
        self.extractor = extractor
        #: embeds the names of new entities at the end of a run, for query-time linking
        self.embedder = embedder

    def build(
        self,
        collection: str,
        *,
        should_stop: Callable[[], bool] | None = None,
        on_stage: Callable[[StageProgress], None] | None = None,
    ) -> GraphReport:
        """Extract and write the graph of every `pending` document of the collection, then embed the
        names of the entities that have no vector yet."""
        ledger = self.ledger
        notify = on_stage or (lambda progress: None)
        report = GraphReport(collection)
        todo = ledger.graph_pending(collection)
        notify(StageProgress(GRAPH, total=len(todo)))
        for n, doc in enumerate(todo):
            if should_stop is not None and should_stop():
                report.documents_pending = len(todo) - n
                break
            self._one(doc.document_id, doc.version, report)
            notify(StageProgress(GRAPH, doc.source_uri))
        if self.embedder is not None:
            # the names of entities this run (or an interrupted earlier one) added, embedded once, in
            # large batches, so query-time linking reads vectors instead of running the model
            report.entities_embedded = embed_entity_names(ledger, self.embedder, collection)
            if report.entities_embedded:
                log.info(
                    "entity names embedded", extra={"collection": collection, "entities": report.entities_embedded}
                )
        return report

    def _one(self, document_id: str, expected_version: int, report: GraphReport) -> None:
        ledger = self.ledger
        version, chunks, chunk_ids = ledger.graph_input(document_id)
        if version != expected_version:
            return  # rewritten meanwhile: pending again under its new version, or deleted
        try:
            extraction = self.extractor.extract(chunks) if chunks else GraphExtraction()
        except DocumentError as exc:
            self._failed(report, document_id, version, f"[{exc.code}] {exc}")
            return
        except KagError:
            raise  # the extractor itself is broken (model missing): every document would fail
        except Exception as exc:
            log.exception("graph extraction failed", extra={"document_id": document_id})
            self._failed(report, document_id, version, f"{exc.__class__.__name__}: {exc}")
            return
        if ledger.write_graph(document_id, version, chunk_ids, extraction):
            report.documents_done += 1

    def _failed(self, report: GraphReport, document_id: str, version: int, reason: str) -> None:
        if self.ledger.mark_graph_failed(document_id, version, reason):
            report.documents_failed += 1
        log.warning("graph extraction failed", extra={"document_id": document_id, "error": reason})
