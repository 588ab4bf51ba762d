"""Read views of the knowledge graph for people: an entity's relations and its neighbourhood, with evidence.

Every read names the collections it may look in, and an entity is looked up in each of them
separately: entity ids are per collection, so linking never crosses a caller's scope.

Evidence offsets: the ledger stores a relation's evidence span document-absolute
(`RelationRow.evidence_start/end`; `RelationRecord` has them chunk-relative until the ledger adds the
chunk's start). The views name them `doc_start`/`doc_end`; `_chunk_span` is the one place that
turns them into offsets within the chunk text the quote is read from.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from kag.errors import InvalidRequestError, NotFoundError
from kag.ledger.models import ChunkRow, DocumentRow, EntityRow, MentionRow, RelationRow
from kag.ontology import Claim, Conflict, resolve

_SPACES = re.compile(r"\s+")
MAX_HOPS = 3


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where a relation is stated: the sentence, in document-absolute offsets."""

    document_id: str
    title: str
    source_uri: str
    chunk_id: str
    doc_start: int
    doc_end: int
    quote: str


@dataclass(frozen=True, slots=True)
class RelationView:
    """One (source, target, type) of the graph, its rows aggregated; evidence from its strongest row."""

    relation_id: str
    source_id: str
    source: str
    target_id: str
    target: str
    type: str
    strength: float
    grade: str
    source_kind: str
    created_at: datetime | None
    documents: int
    evidence: Evidence
    #: "won" or "lost" when an opposing relation joins the same pair (kag.ontology.OPPOSING_TYPES)
    conflict: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat() if self.created_at else None
        data["strength"] = round(self.strength, 4)
        return data

    def claim(self) -> Claim:
        return Claim(
            self.source_id, self.target_id, self.type, self.grade, self.created_at, self.strength, self.relation_id
        )


@dataclass(frozen=True, slots=True)
class EntityView:
    collection: str
    entity_id: str
    key: str
    name: str
    label: str
    mentions: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(name: str) -> str:
    """An entity name as the ledger keys it: lowercased, whitespace collapsed."""
    return _SPACES.sub(" ", name).strip().lower()


def _chunk_span(chunk_start: int, start: int, end: int) -> tuple[int, int]:
    """Offsets within the chunk's text of a relation's evidence, which the ledger stores document-absolute."""
    return start - chunk_start, end - chunk_start


def find_entity(ledger: Any, collection: str, name: str) -> EntityView | None:
    """The collection's entity named so (its key, else its display name, case-insensitively)."""
    key = normalize(name)
    if not key:
        raise InvalidRequestError("the entity name is empty", hint="give the name of an entity, e.g. Redis")
    with ledger.session() as s:
        row = s.scalars(select(EntityRow).where(EntityRow.collection == collection, EntityRow.key == key)).first()
        if row is None:
            row = s.scalars(
                select(EntityRow)
                .where(EntityRow.collection == collection, func.lower(EntityRow.name) == key)
                .order_by(EntityRow.id)
            ).first()
        if row is None:
            return None
        mentions = int(
            s.scalar(select(func.count()).select_from(MentionRow).where(MentionRow.entity_id == row.id)) or 0
        )
        return EntityView(collection, row.id, row.key, row.name, row.label, mentions)


def find_entities(ledger: Any, collections: Iterable[str], name: str) -> list[EntityView]:
    """The entity in each of `collections` that has it; NotFoundError when none has."""
    scope = sorted(set(collections))
    found = [e for e in (find_entity(ledger, c, name) for c in scope) if e is not None]
    if not found:
        where = f"the collection{'s' if len(scope) != 1 else ''} {', '.join(scope) or '(none)'}"
        raise NotFoundError(
            f"no entity named {name!r} in {where}",
            hint="entities come from ingested text; try another spelling or the singular (policy, not policies)",
            entity=name,
        )
    return found


def relations_of(
    ledger: Any, collection: str, entity_ids: Collection[str], *, limit: int | None = None
) -> list[RelationView]:
    """Relations touching `entity_ids` in one collection, best first (grade, then strength), conflicts marked."""
    ids = sorted(set(entity_ids))
    if not ids:
        return []
    source, target = EntityRow.__table__.alias("s"), EntityRow.__table__.alias("t")
    rows: list[Any] = []
    with ledger.session() as s:
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows.extend(
                s.execute(
                    select(
                        RelationRow.id,
                        RelationRow.source_id,
                        source.c.name.label("source_name"),
                        RelationRow.target_id,
                        target.c.name.label("target_name"),
                        RelationRow.type,
                        RelationRow.strength,
                        RelationRow.grade,
                        RelationRow.source_kind,
                        RelationRow.created_at,
                        RelationRow.document_id,
                        RelationRow.chunk_id,
                        RelationRow.evidence_start,
                        RelationRow.evidence_end,
                        ChunkRow.text.label("chunk_text"),
                        ChunkRow.char_start,
                        DocumentRow.title,
                        DocumentRow.source_uri,
                    )
                    .join(source, source.c.id == RelationRow.source_id)
                    .join(target, target.c.id == RelationRow.target_id)
                    .join(ChunkRow, ChunkRow.id == RelationRow.chunk_id)
                    .join(DocumentRow, DocumentRow.id == RelationRow.document_id)
                    .where(
                        RelationRow.collection == collection,
                        or_(RelationRow.source_id.in_(part), RelationRow.target_id.in_(part)),
                    )
                ).all()
            )
    grouped: dict[tuple[str, str, str], list[Any]] = {}
    for r in {r.id: r for r in rows}.values():  # a relation between two of the ids comes twice
        grouped.setdefault((r.source_id, r.target_id, r.type), []).append(r)
    views = [_view(group) for group in grouped.values()]
    views = mark_conflicts(views)
    views.sort(key=lambda v: (v.grade, -v.strength, v.type, v.source, v.target))
    return views if limit is None else views[:limit]


def _view(group: Sequence[Any]) -> RelationView:
    best = max(group, key=lambda r: (r.strength, -r.evidence_start, r.id))
    a, b = _chunk_span(best.char_start, best.evidence_start, best.evidence_end)
    evidence = Evidence(
        document_id=best.document_id,
        title=best.title or "",
        source_uri=best.source_uri,
        chunk_id=best.chunk_id,
        doc_start=best.evidence_start,
        doc_end=best.evidence_end,
        quote=best.chunk_text[a:b],
    )
    stamps = [r.created_at for r in group if r.created_at is not None]
    return RelationView(
        relation_id=best.id,
        source_id=best.source_id,
        source=best.source_name,
        target_id=best.target_id,
        target=best.target_name,
        type=best.type,
        strength=float(best.strength),
        grade=min(r.grade for r in group),
        source_kind=best.source_kind,
        created_at=max(stamps) if stamps else None,
        documents=len({r.document_id for r in group}),
        evidence=evidence,
    )


def mark_conflicts(views: Sequence[RelationView]) -> list[RelationView]:
    """The views with `conflict` set on each side of an opposing pair."""
    conflicts = conflicts_among(views)
    won = {c.winner.relation_id for c in conflicts}
    lost = {c.loser.relation_id for c in conflicts}
    out = []
    for v in views:
        mark = "lost" if v.relation_id in lost else "won" if v.relation_id in won else None
        out.append(replace(v, conflict=mark))
    return out


def conflicts_among(views: Iterable[RelationView]) -> list[Conflict]:
    return resolve([v.claim() for v in views])[1]


def neighbourhood(ledger: Any, entity: EntityView, hops: int = 1, *, max_edges: int = 200) -> dict[str, Any]:
    """The entity, the entities within `hops` relations of it and the relations among them (best first,
    at most `max_edges`); a relation that lost a conflict is kept, marked, so a reviewer sees both."""
    if not 1 <= hops <= MAX_HOPS:
        raise InvalidRequestError(f"hops must be between 1 and {MAX_HOPS}, not {hops}", hint="e.g. hops=1")
    level = {entity.entity_id: 0}
    frontier = {entity.entity_id}
    edges: dict[str, RelationView] = {}
    for hop in range(hops):
        found = relations_of(ledger, entity.collection, frontier)
        nxt: set[str] = set()
        for view in found:
            if len(edges) >= max_edges and view.relation_id not in edges:
                continue
            edges[view.relation_id] = view
            nxt.update({view.source_id, view.target_id} - level.keys())
        level.update(dict.fromkeys(nxt, hop + 1))
        frontier = nxt
        if not frontier:
            break
    nodes: dict[str, dict[str, Any]] = {entity.entity_id: {"id": entity.entity_id, "name": entity.name, "hop": 0}}
    for view in edges.values():
        for node_id, node_name in ((view.source_id, view.source), (view.target_id, view.target)):
            nodes.setdefault(node_id, {"id": node_id, "name": node_name, "hop": level.get(node_id, hops)})
    return {
        "collection": entity.collection,
        "entity": entity.to_dict(),
        "hops": hops,
        "nodes": list(nodes.values()),
        "edges": [v.to_dict() for v in mark_conflicts(list(edges.values()))],
        "truncated": len(edges) >= max_edges,
    }


def entities_in_chunks(ledger: Any, chunk_ids: Collection[str]) -> dict[str, set[str]]:
    """collection -> ids of the entities mentioned in the given chunks."""
    found: dict[str, set[str]] = {}
    ids = sorted(set(chunk_ids))
    with ledger.session() as s:
        for start in range(0, len(ids), 500):
            rows = s.execute(
                select(ChunkRow.collection, MentionRow.entity_id)
                .join(ChunkRow, ChunkRow.id == MentionRow.chunk_id)
                .where(MentionRow.chunk_id.in_(ids[start : start + 500]))
                .distinct()
            ).all()
            for collection, entity_id in rows:
                found.setdefault(collection, set()).add(entity_id)
    return found


def conflicts_in_chunks(ledger: Any, collections: Collection[str], chunk_ids: Collection[str]) -> list[dict[str, Any]]:
    """The conflicts between entities the chunks mention (in `collections` only), each saying which
    relation won and why, with both relations' evidence."""
    entries: list[dict[str, Any]] = []
    for collection, entity_ids in sorted(entities_in_chunks(ledger, chunk_ids).items()):
        if collection not in collections:
            continue
        views = [
            v
            for v in relations_of(ledger, collection, entity_ids)
            if v.source_id in entity_ids and v.target_id in entity_ids
        ]
        by_id: dict[str | None, RelationView] = {v.relation_id: v for v in views}
        for conflict in conflicts_among(views):
            winner, loser = by_id[conflict.winner.relation_id], by_id[conflict.loser.relation_id]
            entries.append(
                {
                    "collection": collection,
                    "entities": sorted({winner.source, winner.target}),
                    "rule": conflict.rule,
                    "winner": _side(winner),
                    "loser": _side(loser),
                }
            )
    return entries


def _side(view: RelationView) -> dict[str, Any]:
    data = view.to_dict()
    data.pop("conflict", None)
    return data
