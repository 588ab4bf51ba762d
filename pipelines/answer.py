"""The answer pipeline: retrieve -> rerank -> generate -> verify -> audit, one traced run per question."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from kag.errors import AnswerInterruptedError
from kag.ledger import Ledger
from kag.records import ScoredChunk, SearchHit, Source, Verification
from pipelines.answerability import AnswerabilityModel, evidence_features
from pipelines.generate import PROBED, PromptProfile
from pipelines.multihop import Hop, Plan, choice_options, chosen_option, gather, hop_sources, plan
from pipelines.rerank import RerankStage
from pipelines.retrieve import HybridRetriever, hydrate
from pipelines.verify import REASON_JUDGED_UNANSWERABLE

#: the `reason` of an answer cut short by `cancel` (the service shutting down)
INTERRUPTED_REASON = "interrupted: the service stopped before the answer was finished"


class Generator(Protocol):
    """What the answer pipeline needs from the local LLM (see `pipelines.generate.LlamaGenerator`)."""

    @property
    def model_path(self) -> str: ...

    @property
    def model_sha256(self) -> str: ...

    def model_info(self) -> dict[str, Any]: ...

    @property
    def sampling(self) -> Any: ...

    def count_tokens(self, text: str) -> int: ...

    def prompt_budget(self, max_tokens: int | None = None) -> int: ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def stream(self, prompt: str, *, sampling: Any = None, continue_probe: bool = False) -> Iterator[str]: ...

    def yes_probability(self, prompt: str) -> float: ...

    def complete(self, prompt: str, *, sampling: Any = None) -> Any: ...


class VerifierLike(Protocol):
    def unseen_terms(self, question: str, sources: Sequence[Source]) -> list[str]: ...

    def verify(self, question: str, answer: str, sources: Sequence[Source]) -> Verification: ...

    def abstention(self, reason: str) -> Verification: ...

    def with_hop_evidence(
        self,
        question: str,
        verification: Verification,
        hops: Sequence[tuple[str | None, Sequence[Source]]],
        sources: Sequence[Source] = (),
    ) -> Verification: ...


class AuditSink(Protocol):
    def append(self, body: dict[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class MetadataFilter:
    """Restricts retrieval to documents by id, source path prefix or last update time."""

    document_ids: tuple[str, ...] | None = None
    source_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return self.document_ids is None and not self.source_prefix and self.since is None and self.until is None


@dataclass(frozen=True)
class AnswerResult:
    """A verified, cited, audited answer."""

    question: str
    collections: tuple[str, ...]
    answer: str
    verification: Verification
    sources: tuple[Source, ...]
    raw_output: str
    prompt: str
    audit_id: str
    timings: dict[str, float] = field(default_factory=dict)
    short_answer: str | None = None  # the answering phrase of the verified answer ("1.5 days", "yes")
    asked: str | None = None  # the question as asked, when a follow-up was rewritten into `question`
    p_answerable: float | None = None
    #: the evidence signals of the answerability decision and its P(answerable) (pipelines.answerability)
    answerability: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "asked": self.asked if self.asked != self.question else None,
            "collections": list(self.collections),
            "answer": self.answer,
            "short_answer": self.short_answer,
            "p_answerable": self.p_answerable,
            "answerability": self.answerability,
            "abstained": self.verification.abstained,
            "policy": self.verification.policy,
            "reason": self.verification.reason,
            "sentences": [s.to_dict() for s in self.verification.sentences],
            "citations": [c.to_dict() for c in self.verification.citations],
            "sources": [
                {"number": s.number, **{k: v for k, v in s.hit.to_dict().items() if k != "text"}} for s in self.sources
            ],
            "audit_id": self.audit_id,
            "timings_ms": {k: round(v * 1000, 1) for k, v in self.timings.items()},
        }


_MARKERS = re.compile(r"\[\s*\d+(?:\s*[,;-]\s*\d+)*\s*\]")


def _trace(hits: Sequence[ScoredChunk] | Sequence[SearchHit]) -> list[list[Any]]:
    return [[h.chunk_id, round(float(h.score), 6)] for h in hits]


class AnswerPipeline:
    """Composes the stages; every collaborator comes in through the constructor."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        retriever: HybridRetriever,
        rerank: RerankStage,
        generator: Generator,
        verifiers: Callable[[str], VerifierLike],
        audit: AuditSink,
        sampling: Any,
        rerank_depth: int = 20,
        context_chunks: int = 6,
        default_policy: str = "extractive",
        answerable_threshold: float = 0.0,
        short_answers: bool = True,
        multihop: bool = True,
        absolute_sources: bool = False,
        profile: PromptProfile | None = None,
        answerability: AnswerabilityModel | None = None,
    ) -> None:
        self.ledger = ledger
        self.retriever = retriever
        self.rerank = rerank
        self.generator = generator
        self.verifiers = verifiers  # policy -> verifier
        self.audit = audit
        self.sampling = sampling
        self.rerank_depth = rerank_depth
        self.context_chunks = context_chunks
        self.default_policy = default_policy
        # least P(the sources answer the question) from the model's probe for an answer to be written
        self.answerable_threshold = answerable_threshold
        self.short_answers = short_answers
        self.multihop = multihop  # decompose bridge and comparison questions and retrieve per hop
        self.profile = profile or PROBED  # how the model is asked (pipelines.generate.prompt_profile)
        #: decides from the evidence, after verification, whether to show the answer (None: never abstains
        #: on it; the signals are still recorded)
        self.answerability = answerability
        #: show sources by their absolute path (KAG_SOURCE_URI=absolute) instead of root-relative
        self.absolute_sources = absolute_sources

    def answer(
        self,
        question: str,
        collections: Collection[str],
        *,
        principal: str = "local",
        policy: str | None = None,
        filters: MetadataFilter | None = None,
        on_token: Callable[[str], None] | None = None,
        history: Sequence[tuple[str, str]] = (),
    ) -> AnswerResult:
        """Answer from the caller's collections only; the audit record is written before returning."""
        result: AnswerResult | None = None
        events = self.stream(
            question, collections, principal=principal, policy=policy, filters=filters, history=history
        )
        for event, value in events:
            if event == "token" and on_token is not None:
                on_token(value)
            elif event == "final":
                result = value
        assert result is not None
        return result

    def stream(
        self,
        question: str,
        collections: Collection[str],
        *,
        principal: str = "local",
        policy: str | None = None,
        filters: MetadataFilter | None = None,
        history: Sequence[tuple[str, str]] = (),
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """Yields ("token", str) while generating, then ("final", AnswerResult) once verified and audited.

        Once `cancel` is set (the service is shutting down) generation stops at the next token: what was
        generated is audited as an interrupted answer (`stop_reason` "interrupted") and
        AnswerInterruptedError, naming the audit record, is raised instead of the final event.

        `history`: the conversation so far as (role, text) turns; a follow-up ("Which version does it
        run?") is rewritten into a standalone question from it, and that question is what is retrieved
        and answered (the audit record keeps both)."""
        policy = policy or self.default_policy
        asked_question = question
        conversation = None
        if history:
            from pipelines.conversation import rewrite_follow_up

            rewrite = rewrite_follow_up(self.generator, history, question)
            question = rewrite.question
            conversation = rewrite.to_dict()
        scope = sorted(set(collections))
        timings: dict[str, float] = {}
        t0 = time.perf_counter()

        document_ids: set[str] | None = None
        if filters is not None and not filters.empty:
            document_ids = self.ledger.document_ids_matching(
                scope,
                document_ids=list(filters.document_ids) if filters.document_ids is not None else None,
                source_prefix=filters.source_prefix,
                since=filters.since,
                until=filters.until,
            )
        fused, rankings = self.retriever.retrieve_traced(question, self.rerank_depth, scope, document_ids)
        candidates = hydrate(self.ledger, fused, absolute_sources=self.absolute_sources)
        timings["retrieve"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        reranked = self.rerank.run(question, candidates, self.context_chunks) if candidates else []
        the_plan = plan(question) if self.multihop and reranked else Plan("single")
        hops: list[Hop] = []
        if the_plan.kind != "single":

            def another_hop(query: str, n: int) -> tuple[list[SearchHit], list[list[Any]]]:
                found, _ = self.retriever.retrieve_traced(query, self.rerank_depth, scope, document_ids)
                return self.rerank.run(
                    query, hydrate(self.ledger, found, absolute_sources=self.absolute_sources), n
                ), _trace(found)

            reranked, hops = gather(question, the_plan, reranked, _trace(reranked), another_hop, k=self.context_chunks)
        timings["rerank"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        from pipelines.generate import PROBE_PREFIX, PROBE_YES, RepetitionGuard, build_answer_prompt

        profile = self.profile
        prompt_parts = build_answer_prompt(
            question,
            reranked,
            count_tokens=self.generator.count_tokens,
            budget_tokens=self.generator.prompt_budget(self.sampling.max_tokens),
            instruction=profile.instruction,
            example=profile.example,
        )
        prompt = self.generator.render_chat(prompt_parts.messages)
        verifier = self.verifiers(policy)
        pieces: list[str] = []
        stop_reason: str | None = None
        p_answerable: float | None = None
        raw = ""
        # nothing to read, or sources that never mention a name or number of the question: verify
        # abstains whatever the model says, so the model is not asked
        asked = bool(prompt_parts.sources) and not verifier.unseen_terms(question, prompt_parts.sources)
        generated = False
        if cancel is not None and cancel.is_set():
            stop_reason = "interrupted"
        elif asked:
            if profile.probe:
                # the model first says whether the sources answer the question; below the threshold it
                # is not asked to write an answer it would have to invent
                prompt += PROBE_PREFIX
                p_answerable = float(self.generator.yes_probability(prompt))
            if p_answerable is None or p_answerable >= self.answerable_threshold:
                if p_answerable is not None:
                    prompt += PROBE_YES
                generated = True
                guard = RepetitionGuard()
                tokens = self.generator.stream(prompt, sampling=self.sampling, continue_probe=p_answerable is not None)
                try:
                    for piece in tokens:
                        pieces.append(piece)
                        yield "token", piece
                        if guard.feed(piece):
                            stop_reason = "repetition"
                            break
                        if cancel is not None and cancel.is_set():
                            stop_reason = "interrupted"
                            break
                finally:
                    close = getattr(tokens, "close", None)
                    if close is not None:
                        close()  # releases the model for the next caller
                raw = "".join(pieces)
        timings["generate"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        if stop_reason == "interrupted":  # nothing half-generated is verified or shown; the record keeps it
            verification = verifier.abstention(INTERRUPTED_REASON)
        elif asked and not generated and p_answerable is not None:
            assert p_answerable is not None
            verification = verifier.abstention(
                f"{REASON_JUDGED_UNANSWERABLE}: the model gives {p_answerable:.2f} that the sources answer the "
                f"question, below {self.answerable_threshold:.2f}"
            )
        else:
            shown = guard.text if stop_reason == "repetition" else raw  # the answer up to where it looped
            verification = verifier.verify(question, shown, prompt_parts.sources)
        evidence: dict[str, Any] | None = None
        if generated and not verification.abstained:
            features = evidence_features(question, verification, prompt_parts.sources, p_answerable)
            evidence = {"features": {k: round(v, 6) for k, v in features.items()}}
            model = self.answerability
            if model is not None and the_plan.kind != "single":
                # fitted on single-passage questions: a comparison or bridge question spreads its words over
                # two passages, so its coverage signals read low (HotpotQA: 24 of 36 verified answers fell
                # below the threshold). Recorded, not decided; the verifier's own checks still apply.
                evidence["not_decided"] = f"{the_plan.kind} question: the model was fitted on single-passage ones"
            elif model is not None:
                p_evidence = model.probability(features)
                evidence.update(p_answerable=round(p_evidence, 6), threshold=model.threshold, fitted_on=model.fitted_on)
                if p_evidence < model.threshold:
                    signals = ", ".join(f"{k} {v:.2f}" for k, v in features.items())
                    verification = verifier.abstention(
                        f"{REASON_JUDGED_UNANSWERABLE}: the evidence gives {p_evidence:.2f} that the sources "
                        f"answer the question, below {model.threshold:.2f} ({signals})"
                    )
        answered = verification  # the model's verified answer, before kag's quotes of hops and premises
        if not verification.abstained:
            # the composition: an answer that leans on one hop's passage also quotes the other hop's, and
            # the premise of the question where the quotes shown leave it unsaid
            verification = verifier.with_hop_evidence(
                question, verification, hop_sources(the_plan, hops, prompt_parts.sources), prompt_parts.sources
            )
        timings["verify"] = time.perf_counter() - t3
        t_short = time.perf_counter()
        # picked from the model's verified answer: the quotes kag added are evidence, not the answer
        short_answer = self._short_answer(question, answered) if self.short_answers else None
        if self.short_answers:
            timings["short_answer"] = time.perf_counter() - t_short  # a model call: timed apart from verify

        t4 = time.perf_counter()
        body = {
            "principal": principal,
            "collections": scope,
            "question": question,
            "conversation": conversation,
            "filters": None
            if filters is None
            else {
                "document_ids": list(filters.document_ids) if filters.document_ids is not None else None,
                "source_prefix": filters.source_prefix,
                "since": filters.since,
                "until": filters.until,
            },
            "retrieval": {
                "per_retriever": {name: _trace(hits) for name, hits in rankings.items()},
                "fused": _trace(fused),
                "reranked": _trace(reranked),
            },
            "multihop": None
            if not hops
            else {
                "kind": the_plan.kind,
                "entities": list(the_plan.entities),
                "hops": [h.to_dict() for h in hops],
                "composition": "sources interleaved hop by hop (comparison: each entity's hop first), "
                "then one answer over all of them; each hop the answer does not cite gets its best sentence "
                "about its entity quoted after it, and the question's premise where the answer leaves it unsaid "
                "(verdict action 'added')",
            },
            "sources": [
                {
                    "number": s.number,
                    "chunk_id": s.hit.chunk_id,
                    "document_id": s.hit.document_id,
                    "char_start": s.hit.char_start,
                    "char_end": s.hit.char_end,
                }
                for s in prompt_parts.sources
            ],
            "prompt": prompt,
            "model": self.generator.model_info(),
            "generated": generated,
            "prompt_profile": profile.name,
            "answerability": {
                "probe": p_answerable is not None,
                "p_answerable": None if p_answerable is None else round(p_answerable, 6),
                "threshold": self.answerable_threshold,
                # the decision from the evidence after verification (None when nothing was verified)
                "evidence": evidence,
            },
            "stop_reason": stop_reason,
            "sampling": self.sampling.to_dict(),
            "raw_output": raw,
            "short_answer": short_answer,
            "conclusion": verification.conclusion,
            "answer": verification.answer,
            "abstained": verification.abstained,
            "reason": verification.reason,
            "policy": verification.policy,
            "citations": [c.to_dict() for c in verification.citations],
            "verdicts": [s.to_dict() for s in verification.sentences],
            "timings_ms": {k: round(v * 1000, 3) for k, v in timings.items()},
        }
        if stop_reason == "interrupted":
            body["interrupted"] = True
        from pipelines.graph_evidence import graph_audit

        body.update(graph_audit(self.ledger, scope, rankings, prompt_parts.sources))  # graph conflicts, who won
        entry = self.audit.append(body)  # raises AuditWriteError: then no answer is returned
        timings["audit"] = time.perf_counter() - t4
        if stop_reason == "interrupted":
            raise AnswerInterruptedError(
                f"the answer was interrupted after {len(pieces)} generated pieces: the service is shutting down",
                retry_after=5,
                hint="ask again once the service is back; the audit record holds what was generated",
                audit_id=str(entry.id),
            )
        timings["total"] = time.perf_counter() - t0
        yield (
            "final",
            AnswerResult(
                question=question,
                asked=asked_question,
                collections=tuple(scope),
                answer=verification.answer,
                verification=verification,
                sources=prompt_parts.sources,
                raw_output=raw,
                prompt=prompt,
                audit_id=str(entry.id),
                timings=timings,
                short_answer=short_answer,
                p_answerable=p_answerable,
                answerability=evidence,
            ),
        )

    def _short_answer(self, question: str, verification: Verification) -> str | None:
        """The phrase of the verified answer that answers the question ("Shirley Temple", "1.5 days"):
        the model picks it from the shown answer alone, and it is kept only if it is a piece of that
        text (or the yes/no the answer starts with), so it can never say more than the verified answer. A
        choice between two named options is answered with the option the verified text names (as the
        question spells it), without a model call."""
        if verification.abstained:
            return None
        if verification.conclusion is not None:
            return verification.conclusion
        from pipelines.generate import SHORT_ANSWER_INSTRUCTION, short_answer_sampling

        text = " ".join(_MARKERS.sub(" ", verification.answer).replace('"', " ").split())
        options = choice_options(question)
        if options is not None:
            # "Who is younger, X or Y?": the answer is the option the verified text names (first), not a
            # phrase around it ("X is younger")
            chosen = chosen_option(options, text)
            if chosen is not None:
                return chosen
        prompt = self.generator.render_chat(
            [
                {"role": "system", "content": SHORT_ANSWER_INSTRUCTION},
                {"role": "user", "content": f"Text: {text}\nQuestion: {question}"},
            ]
        )
        completion = self.generator.complete(prompt, sampling=short_answer_sampling(self.sampling))
        phrase = " ".join(str(completion.text).strip().strip(".\"'").split())
        words = len(phrase.split())
        if phrase and phrase.lower() in text.lower() and words <= max(6, len(text.split()) // 2):
            return phrase
        return None
