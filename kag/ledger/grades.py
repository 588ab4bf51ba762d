"""Recomputing relation grades inside the ledger's write transactions (rules in `kag.ontology`).

A grade belongs to a (source, target, type) triple, not to one row: a second document stating the
same relation raises every row of it to A, and deleting that document lowers them again. Writes
and deletes pass the triples they touched, so the cost follows the document, not the collection.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from kag.errors import DocumentError
from kag.ledger.models import DocumentRow, RelationRow
from kag.ontology import DocumentEvidence, best_grade, document_evidence, row_grade, stated

Triple = tuple[str, str, str]  # (source entity id, target entity id, type)


def _evidence(meta: Any) -> DocumentEvidence:
    try:
        return document_evidence(meta or {})
    except DocumentError:  # validated when written; a row older than that check grades as plain
        return DocumentEvidence()


def triples_of_document(s: Session, document_id: str) -> set[Triple]:
    """The relation triples a document states (read before its rows are deleted)."""
    rows = s.execute(
        select(RelationRow.source_id, RelationRow.target_id, RelationRow.type)
        .where(RelationRow.document_id == document_id)
        .distinct()
    ).all()
    return {(r[0], r[1], r[2]) for r in rows}


def regrade(s: Session, collection: str, triples: Collection[Triple], floor: str | None = None) -> None:
    """Set the grade of every row of the given triples from all rows that state them; `floor` is the
    collection's lowest grade (settings), which raises and never lowers."""
    if not triples:
        return
    wanted = set(triples)
    sources = sorted({t[0] for t in wanted})
    found: dict[Triple, list[Any]] = {}
    for start in range(0, len(sources), 500):
        rows = s.execute(
            select(
                RelationRow.id,
                RelationRow.source_id,
                RelationRow.target_id,
                RelationRow.type,
                RelationRow.strength,
                DocumentRow.sha256,
                DocumentRow.meta,
            )
            .join(DocumentRow, DocumentRow.id == RelationRow.document_id)
            .where(RelationRow.collection == collection, RelationRow.source_id.in_(sources[start : start + 500]))
        ).all()
        for r in rows:
            triple = (r.source_id, r.target_id, r.type)
            if triple in wanted:
                found.setdefault(triple, []).append(r)
    changes: list[dict[str, Any]] = []
    for rows in found.values():
        grades = [row_grade(r.type, r.strength, _evidence(r.meta)) for r in rows]
        # independent documents: the same content uploaded twice is one source, not two
        stating = {r.sha256 for r in rows if stated(r.type, r.strength)}
        grade = best_grade(*grades, "A" if len(stating) >= 2 else None, floor)
        changes.extend({"rid": r.id, "g": grade} for r in rows)
    if changes:
        table = RelationRow.__table__
        assert isinstance(table, Table)
        s.execute(update(table).where(table.c.id == bindparam("rid")).values(grade=bindparam("g")), changes)
