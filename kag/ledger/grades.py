"""Recomputing relation grades inside the ledger's write transactions (rules in `kag.ontology`).

A grade belongs to a (source, target, type) triple, not to one row: a second document stating the
same relation raises every row of it to A, and deleting that document lowers them again. Writes
and deletes pass the triples they touched, so the cost follows the document, not the collection.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Table, bindparam, select, tuple_, update
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
    wanted = sorted(set(triples))
    found: dict[Triple, list[Any]] = {}
    # exactly the triples (index ix_relations_pair_type), not every relation of their entities: a hub
    # entity's other relations would make each write read a large part of the collection
    for start in range(0, len(wanted), 300):
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
            .where(
                RelationRow.collection == collection,
                tuple_(RelationRow.source_id, RelationRow.target_id, RelationRow.type).in_(wanted[start : start + 300]),
            )
        ).all()
        for r in rows:
            found.setdefault((r.source_id, r.target_id, r.type), []).append(r)
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
