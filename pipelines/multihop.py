"""Multi-hop questions (HotpotQA's bridge and comparison kinds): decompose, retrieve per hop, merge.

A bridge question names one entity and asks about another that only the first one's passage names
("the woman who portrayed Corliss Archer in Kiss and Tell" -> Shirley Temple -> her government
position). A comparison question names two entities and asks how they compare. One retrieval with
the whole question finds the first hop and often misses the second, whose passage shares few words
with the question.

The planner here needs no extra generation: a comparison is split at its two named entities, each
retrieved on its own; for a bridge, the entities named in the first hop's best passages that the
question does not name are the bridge candidates, and the second hop retrieves with each of them. A
candidate counts when a passage about it (its title names it) comes back. Every hop's sub-question,
ranking and evidence goes in the audit record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kag.records import SearchHit, Source

# "X or Y", "X and Y": two capitalised names joined in a question that compares them
_NAME = r"(?:[A-Z0-9][\w'’.&-]*)(?:\s+(?:(?:of|the|for|de|da|del|von|van|la|le|a|an|&)\s+)*[A-Z0-9][\w'’.&-]*)*"
_PAIR_RE = re.compile(rf"(?P<a>\"[^\"]+\"|{_NAME})\s*,?\s+(?:or|and|vs\.?|versus)\s+(?P<b>\"[^\"]+\"|{_NAME})")
_COMPARE_CUE_RE = re.compile(
    r"\b(?:both|same|either|neither|which|who|whom|what)\b.*\b(?:or)\b|\b(?:both|same|common|older|younger|"
    r"first|earlier|later|longer|shorter|larger|smaller|bigger|more|less|higher|lower|taller)\b",
    re.IGNORECASE,
)
# "X and Y" compares only when the question treats them as two: "Are X and Y ...", "do X and Y share"
_PLURAL_CUE_RE = re.compile(r"\b(?:are|were|do|did|have|both|same|share|common|between)\b", re.IGNORECASE)
# a thing described by its relation to something named: "the woman who portrayed ...", "the film that ...",
# "the city in which ...", "the county where ...", or a possessive chain "X's third album"
_BRIDGE_RE = re.compile(
    r"\b(?:the|a|an|this|that)\s+(?:[\w-]+\s+){0,3}?(?:who|whom|whose|that|which|where|in\s+which|of\s+which)\b"
    r"|\b(?:the|a|an)\s+[\w-]+\s+(?:by|of|from|for|with|in)\s+(?:the\s+)?[A-Z]",
    re.IGNORECASE,
)
_CAPS_RE = re.compile(rf"{_NAME}")
_QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how is are was were do does did can could has have had will would "
    "the a an in on of and or".split()
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What kind of question this is and the entities it names."""

    kind: str  # "single", "comparison" or "bridge"
    entities: tuple[str, ...] = ()


@dataclass
class Hop:
    """One retrieval of a multi-hop answer, as the audit record keeps it."""

    sub_question: str
    query: str
    ranking: list[list[Any]] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # chunk ids this hop adds to the sources
    found: str | None = None  # the entity this hop was about (bridge: found by the first hop)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sub_question": self.sub_question,
            "query": self.query,
            "ranking": self.ranking,
            "evidence": self.evidence,
            "found": self.found,
        }


def _clean(name: str) -> str:
    name = name.strip().strip('"').strip().rstrip(".,;:")
    words = name.split()
    while words and words[0].lower() in _QUESTION_WORDS:
        words = words[1:]
    return " ".join(words)


def names_in(text: str) -> list[str]:
    """Capitalised multi-word names of a text ("Kiss and Tell", "Shirley Temple"), first word of a
    sentence only when the name goes on past it."""
    out = []
    for m in _CAPS_RE.finditer(text):
        name = _clean(m.group())
        if len(name) >= 3 and not name.isdigit():
            out.append(name)
    return list(dict.fromkeys(out))


def plan(question: str) -> Plan:
    """Comparison when the question joins two names with or/and and asks how they compare; bridge when it
    names something and asks about a thing described by its relation to it; else single."""
    q = question.strip()
    for m in _PAIR_RE.finditer(q):
        a, b = _clean(m.group("a")), _clean(m.group("b"))
        joined_by_or = re.search(r"\s(?:or|vs\.?|versus)\s", m.group(0)) is not None
        cue = _COMPARE_CUE_RE if joined_by_or else _PLURAL_CUE_RE
        if a and b and a.lower() != b.lower() and cue.search(q):
            return Plan("comparison", (a, b))
    named = names_in(q)
    if named and _BRIDGE_RE.search(q):
        return Plan("bridge", tuple(named))
    return Plan("single", tuple(named))


def choice_options(question: str) -> tuple[str, str] | None:
    """The two options of a question that asks to choose between named things with "or" ("Who is younger,
    Keith Bostic or Jerry Glanville?" -> ("Keith Bostic", "Jerry Glanville")); None for any other question."""
    for m in _PAIR_RE.finditer(question.strip()):
        if re.search(r"\s(?:or|vs\.?|versus)\s", m.group(0)) is None:
            continue
        a, b = _clean(m.group("a")), _clean(m.group("b"))
        if a and b and a.lower() != b.lower():
            return a, b
    return None


def chosen_option(options: Sequence[str], answer: str) -> str | None:
    """The option an answer names first: by its whole name, else by its last word when that word tells the
    options apart ("Woolf was born earlier"). None when the answer names neither."""
    text = answer.lower()
    found: list[tuple[int, int, str]] = []  # (position, 0 = whole name / 1 = last word, option)
    last_words = [o.split()[-1].lower() for o in options]
    for option, last in zip(options, last_words, strict=True):
        whole = re.search(rf"(?<!\w){re.escape(option.lower())}(?!\w)", text)
        if whole:
            found.append((whole.start(), 0, option))
        elif len(option.split()) > 1 and last_words.count(last) == 1:
            word = re.search(rf"(?<!\w){re.escape(last)}(?!\w)", text)
            if word:
                found.append((word.start(), 1, option))
    return min(found)[2] if found else None


def _mentions(hit: SearchHit, name: str) -> bool:
    key = name.lower()
    return key in (hit.title or "").lower() or hit.text.lower().startswith(key)


Retrieve = Callable[[str, int], tuple[list[SearchHit], list[list[Any]]]]


def gather(
    question: str,
    the_plan: Plan,
    first: Sequence[SearchHit],
    first_ranking: list[list[Any]],
    retrieve: Retrieve,
    *,
    k: int,
    per_hop: int = 3,
    max_candidates: int = 4,
) -> tuple[list[SearchHit], list[Hop]]:
    """The sources of a multi-hop answer: per-hop hits interleaved (first hop first), at most `k`, and
    the hops as the audit record keeps them. `first` is the reranked ranking for the whole question;
    `retrieve(query, n)` returns reranked hits and the trace of one further hop."""
    hops = [Hop(question, question, first_ranking, [h.chunk_id for h in first[:per_hop]])]
    lists: list[list[SearchHit]] = [list(first)]
    if the_plan.kind == "comparison":
        for entity in the_plan.entities:
            sub = f"{question} (about {entity})"
            hits, trace = retrieve(f"{entity} {question}", per_hop)
            about = [h for h in hits if _mentions(h, entity)] or hits
            hops.append(Hop(sub, f"{entity} {question}", trace, [h.chunk_id for h in about[:per_hop]], entity))
            lists.append(about)
        # the comparison needs both entities' passages: they go first
        lists = lists[1:] + lists[:1]
    elif the_plan.kind == "bridge":
        asked = question.lower()
        seen_titles = {(h.title or "").lower() for h in first[:per_hop]}
        candidates = []
        for hit in first[:2]:
            for name in names_in(hit.text):
                if name.lower() not in asked and name.lower() not in seen_titles and name not in candidates:
                    candidates.append(name)
        first_documents = {h.document_id for h in first[:per_hop]}
        for name in candidates[:max_candidates]:
            hits, trace = retrieve(f"{name} {question}", per_hop)
            # a passage about the bridge entity that the first hop did not already have
            about = [h for h in hits if _mentions(h, name) and h.document_id not in first_documents]
            if about:
                sub = f"{question} (the {name} that the first hop found)"
                hops.append(Hop(sub, f"{name} {question}", trace, [h.chunk_id for h in about[:per_hop]], name))
                lists.append(about)
                break
    merged: list[SearchHit] = []
    seen: set[str] = set()
    depth = max((len(x) for x in lists), default=0)
    for i in range(depth):
        for hits in lists:
            if i < len(hits) and hits[i].chunk_id not in seen and len(merged) < k:
                merged.append(hits[i])
                seen.add(hits[i].chunk_id)
    for hop in hops:
        hop.evidence = [c for c in hop.evidence if c in seen]
    return merged, hops


def hop_sources(
    the_plan: Plan, hops: Sequence[Hop], sources: Sequence[Source]
) -> list[tuple[str | None, list[Source]]]:
    """(entity, sources) of each hop, for the composition to cite every hop: a comparison's two entity
    hops, each with its entity; a bridge's first-hop passages that name the entity it found, then the
    found entity's passages, both with the found entity. Empty when the plan found no second hop."""
    by_chunk = {s.hit.chunk_id: s for s in sources}

    def of(hop: Hop) -> list[Source]:
        return [by_chunk[c] for c in hop.evidence if c in by_chunk]

    if the_plan.kind == "comparison":
        return [(hop.found, of(hop)) for hop in hops[1:]]
    if the_plan.kind == "bridge" and len(hops) > 1:
        found = hops[1].found or ""
        first = [s for s in of(hops[0]) if found and found.lower() in s.hit.text.lower()] or of(hops[0])[:1]
        return [(found or None, first), (found or None, of(hops[1]))]
    return []
