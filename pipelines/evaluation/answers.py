"""Answer evaluation: every question through the full answer pipeline, scored against gold answers,
gold evidence spans (in document offsets) and unanswerability."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from kag.errors import KagError
from kag.ledger import Ledger
from kag.records import Verification
from pipelines.evaluation.datasets import AnswerExample, CorpusDoc, GoldSpan
from pipelines.evaluation.metrics import best_over_golds, normalize_answer, precision_recall, ratio, spans_overlap

STAGES = ("retrieve", "rerank", "generate", "verify", "short_answer", "audit", "total")
_MARKER = re.compile(r"\s*\[\s*\d+(?:\s*[,;-]\s*\d+)*\s*\]")


class AnswerLike(Protocol):
    """What the evaluation reads from `pipelines.answer.AnswerResult`."""

    @property
    def answer(self) -> str: ...

    @property
    def verification(self) -> Verification: ...

    @property
    def sources(self) -> Sequence[Any]: ...

    @property
    def timings(self) -> Mapping[str, float]: ...


def prediction_text(result: AnswerLike) -> str:
    """The answer as a string to compare with gold answers: no `[n]` markers, no quotes; empty if abstained."""
    if result.verification.abstained:
        return ""
    text = _MARKER.sub("", result.answer)
    return " ".join(text.replace('"', " ").split())


@dataclass(frozen=True, slots=True)
class DocSpan:
    """Characters [start, end) of a kag document's text."""

    document_id: str
    start: int
    end: int


class EvidenceMap:
    """Gold spans given in passage offsets, mapped to the offsets of the documents kag ingested."""

    def __init__(
        self, ledger: Ledger, collection: str, corpus_id: Callable[[str], str | None], passages: Mapping[str, CorpusDoc]
    ) -> None:
        self.document_of: dict[str, str] = {}  # passage id -> kag document id
        self._base: dict[str, int] = {}  # passage id -> where the passage text starts in the document
        for row in ledger.documents(collection=collection):
            pid = corpus_id(row.source_uri)
            if pid is None or pid not in passages:
                continue
            self.document_of[pid] = row.id
            text = passages[pid].text
            stripped = text.strip()
            at = ledger.get_document(row.id).text.find(stripped) if stripped else -1
            if at >= 0:
                # loaders strip each block, so a passage's leading whitespace is not in the document
                self._base[pid] = at - (len(text) - len(text.lstrip()))

    def to_document(self, span: GoldSpan) -> DocSpan | None:
        base = self._base.get(span.passage_id)
        if base is None:
            return None
        return DocSpan(self.document_of[span.passage_id], base + span.start, base + span.end)


@dataclass
class QuestionResult:
    """One question's outcome, as stored in the JSON report."""

    id: str
    question: str
    is_impossible: bool
    gold_answers: list[str]
    answer: str
    prediction: str
    abstained: bool
    reason: str
    exact_match: float
    f1: float
    contains_gold: bool
    citations: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)  # gold spans in document offsets
    evidence_mapped: bool = False
    cited_gold: bool = False
    gold_passage_in_sources: bool = False
    shown_sentences: int = 0
    shown_supported: int = 0
    model_sentences: int = 0
    model_supported: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    short_answer: str | None = None  # what exact match and F1 scored, when the pipeline picked one
    gold_documents: int = 0  # distinct documents holding gold evidence (HotpotQA: the supporting titles)
    gold_documents_cited: int = 0
    gold_documents_in_sources: int = 0  # of those, how many the sources given to the model held
    p_answerable: float | None = None
    #: the evidence signals of the answerability decision (pipelines.answerability), when it was made
    answerability: dict[str, Any] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)  # the same stages in seconds, 0.1 ms precision


class EvidenceLookup(Protocol):
    def to_document(self, span: GoldSpan) -> DocSpan | None: ...


def score_question(example: AnswerExample, result: AnswerLike, evidence: EvidenceLookup) -> QuestionResult:
    """EM/F1, citations against the gold evidence, and sentence support of one answer."""
    v = result.verification
    prediction = prediction_text(result)
    short = getattr(result, "short_answer", None) if not v.abstained else None
    # exact match and F1 compare a phrase with the gold phrase: the short answer where the pipeline
    # picked one out of its verified answer, else the whole answer text
    em, f1 = best_over_golds(short or prediction, example.answers)
    normalized = normalize_answer(prediction)
    contains = bool(prediction) and any(
        normalize_answer(g) and normalize_answer(g) in normalized for g in example.answers
    )
    gold = [s for s in (evidence.to_document(g) for g in example.evidence) if s is not None]
    citations = []
    for c in v.citations:
        correct = any(
            g.document_id == c.document_id and spans_overlap(c.char_start, c.char_end, g.start, g.end) for g in gold
        )
        citations.append(
            {"document_id": c.document_id, "char_start": c.char_start, "char_end": c.char_end, "on_gold": correct}
        )
    gold_docs = {g.document_id for g in gold}
    shown = [s for s in v.sentences if s.action != "dropped"] if not v.abstained else []
    return QuestionResult(
        id=example.id,
        question=example.question,
        is_impossible=example.is_impossible,
        gold_answers=list(example.answers),
        answer=result.answer,
        prediction=prediction,
        abstained=v.abstained,
        reason=v.reason,
        exact_match=em,
        f1=f1,
        contains_gold=contains,
        citations=citations,
        evidence=[{"document_id": g.document_id, "char_start": g.start, "char_end": g.end} for g in gold],
        evidence_mapped=bool(gold),
        cited_gold=any(c["on_gold"] for c in citations),
        gold_passage_in_sources=any(getattr(s.hit, "document_id", None) in gold_docs for s in result.sources),
        shown_sentences=len(shown),
        shown_supported=sum(s.supported for s in shown),
        model_sentences=sum(s.action != "added" for s in v.sentences),  # hop quotes kag added are not the model's
        model_supported=sum(s.action == "kept" for s in v.sentences),
        timings_ms={k: round(float(t) * 1000, 2) for k, t in result.timings.items()},
        short_answer=short,
        gold_documents=len(gold_docs),
        gold_documents_cited=len(gold_docs & {c.document_id for c in v.citations}),
        gold_documents_in_sources=len(gold_docs & {getattr(s.hit, "document_id", None) for s in result.sources}),
        p_answerable=getattr(result, "p_answerable", None),
        answerability=getattr(result, "answerability", None),
        timings_s={k: round(float(t), 4) for k, t in result.timings.items()},
    )


def run_answers(
    examples: Sequence[AnswerExample],
    answer: Callable[[str], AnswerLike],
    evidence: EvidenceLookup,
    *,
    on_question: Callable[[], None] | None = None,
    on_result: Callable[[QuestionResult], None] | None = None,
) -> list[QuestionResult]:
    """Answer every question; a question whose pipeline run fails is recorded with its error, not fatal.

    `on_result` sees each result as soon as it is scored (the CLI writes it to the record file there)."""
    out: list[QuestionResult] = []
    for example in examples:
        started = time.perf_counter()
        try:
            result = answer(example.question)
        except KagError as exc:
            seconds = time.perf_counter() - started
            out.append(
                QuestionResult(
                    example.id,
                    example.question,
                    example.is_impossible,
                    list(example.answers),
                    "",
                    "",
                    False,
                    "",
                    0.0,
                    0.0,
                    False,
                    timings_ms={"total": round(seconds * 1000, 2)},
                    error=f"{exc.__class__.__name__}: {exc}",
                    timings_s={"total": round(seconds, 4)},
                )
            )
        else:
            out.append(score_question(example, result, evidence))
        if on_result is not None:
            on_result(out[-1])
        if on_question is not None:
            on_question()
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(results: Sequence[QuestionResult]) -> dict[str, Any]:
    """Aggregate metrics over the question results (None where a metric has nothing to count)."""
    ok = [r for r in results if r.error is None]
    has = [r for r in ok if not r.is_impossible]
    no = [r for r in ok if r.is_impossible]
    mapped = [r for r in has if r.evidence_mapped]
    cited = [c for r in mapped for c in r.citations]
    answered = [r for r in ok if not r.abstained]
    multi = [r for r in has if r.gold_documents > 1]
    return {
        "exact_match": _mean([r.exact_match for r in ok]),
        "f1": _mean([r.f1 for r in ok]),
        "has_answer_exact_match": _mean([r.exact_match for r in has]),
        "has_answer_f1": _mean([r.f1 for r in has]),
        "no_answer_exact_match": _mean([r.exact_match for r in no]),
        "no_answer_f1": _mean([r.f1 for r in no]),
        "answer_contains_gold": _mean([float(r.contains_gold) for r in has]),
        "citation_precision": ratio(sum(c["on_gold"] for c in cited), len(cited)),
        "citation_recall": ratio(sum(r.cited_gold for r in mapped), len(mapped)),
        "sentence_support_rate": ratio(
            sum(r.shown_supported for r in answered), sum(r.shown_sentences for r in answered)
        ),
        "model_sentence_support_rate": ratio(sum(r.model_supported for r in ok), sum(r.model_sentences for r in ok)),
        "abstention": precision_recall([r.abstained for r in ok], [r.is_impossible for r in ok]),
        "answer_rate_answerable": ratio(sum(not r.abstained for r in has), len(has)),
        "gold_passage_in_sources": ratio(sum(r.gold_passage_in_sources for r in has), len(has)),
        # multi-hop: questions whose citations cover every gold document (HotpotQA: both supporting titles)
        "citations_cover_all_gold": ratio(sum(r.gold_documents_cited == r.gold_documents for r in multi), len(multi)),
        # ... and whose sources (what the model read) held every gold document: the ceiling of the one above
        "sources_hold_all_gold": ratio(sum(r.gold_documents_in_sources == r.gold_documents for r in multi), len(multi)),
        "errors": len(results) - len(ok),
        "questions_with_mapped_evidence": len(mapped),
    }


def stage_latency(results: Sequence[QuestionResult]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        values = [r.timings_ms[stage] for r in results if stage in r.timings_ms and r.error is None]
        if values:
            arr = np.array(values)
            out[stage] = {
                "p50": round(float(np.percentile(arr, 50)), 1),
                "p95": round(float(np.percentile(arr, 95)), 1),
                "mean": round(float(arr.mean()), 1),
            }
    return out


def as_dicts(results: Sequence[QuestionResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
