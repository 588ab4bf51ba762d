"""Evidence grades, source kinds and conflicts of the relation ontology (the types are in `kag.stores.graph`).

A relation's grade says how well the corpus backs it:

- **A**: stated by a typed pattern in two or more independent documents (different content), or in
  one document marked reproducible (`reproducible: true` in its metadata);
- **B**: one document, an explicit typed pattern;
- **C**: co-occurrence (`RelatedTo`) or a weak pattern only (strength below `WEAK_STRENGTH`: the
  parse reached the argument through prepositions).

A document's metadata may raise, never lower, its relations' grade (`evidence_grade: A|B`), and
names its source kind (`source_kind`: paper, implementation, benchmark or document; default
document). Two relations between the same entities whose types say opposite things
(`OPPOSING_TYPES`) are a conflict: the higher grade wins, then the newer; `resolve` says which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kag.errors import DocumentError

GRADES: tuple[str, ...] = ("A", "B", "C")
SOURCE_KINDS: tuple[str, ...] = ("paper", "implementation", "benchmark", "document")
DEFAULT_SOURCE_KIND = "document"
#: typed relations weaker than this came through prepositions (PP attachment is the parser's weakest
#: call, see `ingest.graph`): as good as co-occurrence for grading
WEAK_STRENGTH = 0.6
UNTYPED = "RelatedTo"

#: Type pairs that cannot both hold between the same two entities. Influences/OppositeTo: one entity
#: acting on the other against one standing opposite it; the others are contraries of each other.
OPPOSING_TYPES: frozenset[frozenset[str]] = frozenset(
    {
        frozenset({"Influences", "OppositeTo"}),
        frozenset({"SimilarTo", "OppositeTo"}),
        frozenset({"Enables", "Prevents"}),
        frozenset({"Causes", "Prevents"}),
        frozenset({"Requires", "Prevents"}),
    }
)


@dataclass(frozen=True, slots=True)
class DocumentEvidence:
    """What a document's metadata says about the evidence its relations carry."""

    source_kind: str = DEFAULT_SOURCE_KIND
    reproducible: bool = False
    grade_floor: str | None = None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "1"))


def document_evidence(meta: Mapping[str, Any]) -> DocumentEvidence:
    """The evidence policy of a document from its metadata; a DocumentError names a bad value."""
    kind = str(meta.get("source_kind") or DEFAULT_SOURCE_KIND).strip().lower()
    if kind not in SOURCE_KINDS:
        raise DocumentError(
            f"source_kind {meta.get('source_kind')!r} is not a source kind",
            hint="use one of: " + ", ".join(SOURCE_KINDS),
        )
    floor = meta.get("evidence_grade")
    if floor is not None:
        floor = str(floor).strip().upper()
        if floor not in GRADES:
            raise DocumentError(f"evidence_grade {meta.get('evidence_grade')!r} is not a grade", hint="use A, B or C")
    return DocumentEvidence(kind, _truthy(meta.get("reproducible")), floor)


def best_grade(*grades: str | None) -> str:
    """The best of the grades given (A over B over C); C when none."""
    return min((g for g in grades if g), default="C")


def row_grade(relation_type: str, strength: float, evidence: DocumentEvidence) -> str:
    """The grade one relation row earns on its own (before other documents are counted)."""
    if relation_type == UNTYPED or strength < WEAK_STRENGTH:
        grade = "C"
    else:
        grade = "A" if evidence.reproducible else "B"
    return best_grade(grade, evidence.grade_floor)


def stated(relation_type: str, strength: float) -> bool:
    """Whether a row states its relation (a typed pattern), as the A grade's document count needs."""
    return relation_type != UNTYPED and strength >= WEAK_STRENGTH


@dataclass(frozen=True, slots=True)
class Claim:
    """One relation type between two entities, as the graph holds it (its rows aggregated)."""

    source: str
    target: str
    type: str
    grade: str
    created_at: datetime | None
    strength: float
    relation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two opposing claims about one entity pair and which one won (`rule`: grade, newer or tie)."""

    winner: Claim
    loser: Claim
    rule: str

    def to_dict(self) -> dict[str, Any]:
        def claim(c: Claim) -> dict[str, Any]:
            return {
                "source": c.source,
                "target": c.target,
                "type": c.type,
                "grade": c.grade,
                "strength": round(c.strength, 4),
                "created_at": c.created_at.isoformat() if c.created_at else None,
                "relation_id": c.relation_id,
            }

        return {"winner": claim(self.winner), "loser": claim(self.loser), "rule": self.rule}


def _rank(claim: Claim) -> tuple[int, float, float, str]:
    """Sort key, best first: grade, then newer, then stronger, then type name (so ties are stable)."""
    stamp = claim.created_at.timestamp() if claim.created_at else float("-inf")
    return (GRADES.index(claim.grade) if claim.grade in GRADES else len(GRADES), -stamp, -claim.strength, claim.type)


def decide(a: Claim, b: Claim) -> Conflict:
    """Which of two opposing claims wins: the higher grade, then the newer timestamp."""
    winner, loser = sorted((a, b), key=_rank)
    if winner.grade != loser.grade:
        rule = "grade"
    elif winner.created_at != loser.created_at:
        rule = "newer"
    else:
        rule = "tie"
    return Conflict(winner, loser, rule)


def resolve(claims: Iterable[Claim]) -> tuple[list[Claim], list[Conflict]]:
    """The claims that stand (losers of a conflict dropped) and the conflicts, per unordered entity pair."""
    claims = list(claims)
    by_pair: dict[frozenset[str], dict[str, Claim]] = {}
    for c in claims:
        types = by_pair.setdefault(frozenset((c.source, c.target)), {})
        current = types.get(c.type)
        if current is None or _rank(c) < _rank(current):
            types[c.type] = c  # the best claim of the type speaks for it (either direction)
    conflicts: list[Conflict] = []
    for types in by_pair.values():
        present = sorted(types)
        for i, a in enumerate(present):
            for b in present[i + 1 :]:
                if frozenset((a, b)) in OPPOSING_TYPES:
                    conflicts.append(decide(types[a], types[b]))
    losers = {(frozenset((c.loser.source, c.loser.target)), c.loser.type) for c in conflicts}
    kept = [c for c in claims if (frozenset((c.source, c.target)), c.type) not in losers]
    return kept, conflicts


def winning_links(rows: Iterable[tuple[str, str, str, float, str, datetime | None]]) -> list[tuple[str, str, float]]:
    """(source, target, strongest strength) per entity pair from (source, target, type, strength, grade,
    newest timestamp) rows, leaving out the types that lose a conflict: retrieval then follows only
    the relation the corpus backs better."""
    claims = [Claim(s, t, kind, grade, stamp, float(strength)) for s, t, kind, strength, grade, stamp in rows]
    kept, _ = resolve(claims)
    best: dict[tuple[str, str], float] = {}
    for c in kept:
        if c.strength > best.get((c.source, c.target), -1.0):
            best[c.source, c.target] = c.strength
    return [(s, t, v) for (s, t), v in best.items()]
