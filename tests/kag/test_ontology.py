"""Grades, source kinds and conflict resolution of the relation ontology."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kag.errors import DocumentError
from kag.ontology import (
    OPPOSING_TYPES,
    Claim,
    DocumentEvidence,
    decide,
    document_evidence,
    resolve,
    row_grade,
    winning_links,
)
from kag.stores.graph import RELATION_TYPES

OLD, NEW = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)


def test_opposing_types_are_ontology_types() -> None:
    assert all(len(pair) == 2 and pair <= set(RELATION_TYPES) for pair in OPPOSING_TYPES)
    assert frozenset({"Influences", "OppositeTo"}) in OPPOSING_TYPES


def test_row_grades() -> None:
    plain = DocumentEvidence()
    assert row_grade("Uses", 0.9, plain) == "B"
    assert row_grade("Uses", 0.5, plain) == "C"  # a weak pattern
    assert row_grade("RelatedTo", 0.5, plain) == "C"
    assert row_grade("Uses", 0.9, DocumentEvidence(reproducible=True)) == "A"
    assert row_grade("RelatedTo", 0.4, DocumentEvidence(reproducible=True)) == "C"  # co-occurrence stays C
    assert row_grade("RelatedTo", 0.4, DocumentEvidence(grade_floor="B")) == "B"
    assert row_grade("Uses", 0.9, DocumentEvidence(grade_floor="C")) == "B"


def test_document_evidence_from_metadata() -> None:
    assert document_evidence({}) == DocumentEvidence("document", False, None)
    assert document_evidence({"source_kind": " Implementation ", "reproducible": "yes", "evidence_grade": "a"}) == (
        DocumentEvidence("implementation", True, "A")
    )
    with pytest.raises(DocumentError, match="use one of: paper, implementation, benchmark, document"):
        document_evidence({"source_kind": "tweet"})


def test_higher_grade_wins_then_the_newer() -> None:
    a_old = Claim("x", "y", "OppositeTo", "A", OLD, 0.6)
    b_new = Claim("y", "x", "Influences", "B", NEW, 0.9)
    assert decide(a_old, b_new).winner == a_old and decide(b_new, a_old).rule == "grade"
    b_old = Claim("x", "y", "OppositeTo", "B", OLD, 0.9)
    won = decide(b_old, b_new)
    assert won.winner == b_new and won.loser == b_old and won.rule == "newer"
    kept, conflicts = resolve([b_old, b_new, Claim("x", "z", "Uses", "C", OLD, 0.4)])
    assert [c.type for c in kept] == ["Influences", "Uses"] and len(conflicts) == 1
    assert conflicts[0].to_dict()["winner"]["type"] == "Influences"


def test_no_conflict_between_compatible_types() -> None:
    kept, conflicts = resolve([Claim("x", "y", "Uses", "B", OLD, 0.9), Claim("x", "y", "Influences", "B", NEW, 0.9)])
    assert len(kept) == 2 and conflicts == []


def test_winning_links_take_the_strongest_surviving_type() -> None:
    rows = [
        ("x", "y", "OppositeTo", 0.95, "B", NEW),
        ("x", "y", "Influences", 0.7, "A", OLD),
        ("x", "y", "RelatedTo", 0.5, "C", NEW),
    ]
    assert winning_links(rows) == [("x", "y", 0.7)]
