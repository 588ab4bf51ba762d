"""The answerability decision from the evidence: its signals, the logistic model, the pipeline's
abstention and audit record, the settings that tune it, and the script that fits it."""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kag.audit import AuditLog
from kag.records import SearchHit, Source
from pipelines.answer import AnswerPipeline
from pipelines.answerability import FEATURES, AnswerabilityModel, evidence_features, fit_logistic
from pipelines.generate import PROBED
from pipelines.verify import REASON_JUDGED_UNANSWERABLE, Verifier
from tests.kag.api.scripted import KESTREL_ANSWER, KESTREL_DOC, KESTREL_QUESTION, ScriptedGenerator

REPO = Path(__file__).resolve().parents[2]
DOC = (
    "Kestrel releases are deployed every Tuesday by the platform team. "
    "Rollbacks use the blue-green switch. The switch was built in 2019."
)


def _source(text: str = DOC) -> Source:
    return Source(1, SearchHit("c1", 1.0, "d1", "ops", "Kestrel guide", "/kestrel.md", text, 0, len(text), None, ()))


def test_features_measure_how_the_sources_cover_the_question(embedder: Any) -> None:
    sources = [_source()]
    verifier = Verifier(embedder, policy="extractive")
    answered = verifier.verify(KESTREL_QUESTION, KESTREL_ANSWER, sources)
    assert not answered.abstained
    f = evidence_features(KESTREL_QUESTION, answered, sources, 0.9)
    assert set(f) == set(FEATURES)
    # every content word of the question ("Kestrel", "releases", "deployed") is in the first sentence
    assert f["coverage"] == pytest.approx(1.0) and f["missing"] == pytest.approx(0.0)
    assert f["cited_coverage"] == pytest.approx(1.0)
    assert f["kept"] == 1.0 and 0.5 < f["support"] <= 1.0
    assert f["probe"] == pytest.approx(2.1972, abs=1e-3)  # logit(0.9)

    # a question about something the sources only half say: lower coverage, words missing everywhere
    other = "When are Kestrel hotfixes approved by security reviewers?"
    answered = verifier.verify(other, "Kestrel releases are deployed every Tuesday [1].", sources)
    g = evidence_features(other, answered, sources, None)
    assert g["coverage"] < 0.5 and g["missing"] > 0.5 and g["probe"] == 0.0


def test_the_logistic_fit_learns_the_informative_signal_and_round_trips() -> None:
    rows = [{"coverage": c / 10, "probe": 0.5} for c in range(11)] * 3
    labels = [r["coverage"] > 0.45 for r in rows]
    weights, bias, means, scales = fit_logistic(rows, labels, l2=0.1)
    assert weights["coverage"] > 1.0 and abs(weights["probe"]) < 1e-9  # a constant signal gets no weight
    model = AnswerabilityModel(weights, bias, means, scales, threshold=0.5, fitted_on="synthetic")
    assert model.probability({"coverage": 0.9, "probe": 0.5}) > 0.8 > 0.2 > model.probability({"coverage": 0.1})
    again = AnswerabilityModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model


@pytest.fixture
def kestrel(tmp_path: Path, embedder: Any) -> Iterator[Any]:
    """A real runtime over the Kestrel guide whose generator says one grounded, cited sentence."""
    from kag.cli.runtime import Runtime
    from tests.kag.api.conftest import api_settings

    runtime = Runtime(api_settings(tmp_path / "data"))
    runtime.__dict__["embedder"] = embedder
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "kestrel.md").write_text(KESTREL_DOC)
    assert runtime.ingestor.ingest([folder], "ops").status == "completed"
    runtime.__dict__["generator"] = ScriptedGenerator(KESTREL_ANSWER, 0.0)
    yield runtime
    runtime.__dict__.pop("embedder")  # the session's model: other tests still use it
    runtime.close()


def _pipeline(runtime: Any, model: AnswerabilityModel | None) -> AnswerPipeline:
    base = runtime.answer_pipeline
    return AnswerPipeline(
        ledger=base.ledger,
        retriever=base.retriever,
        rerank=base.rerank,
        generator=base.generator,
        verifiers=base.verifiers,
        audit=base.audit,
        sampling=base.sampling,
        profile=PROBED,
        answerability=model,
    )


def _model(threshold: float, *, bias: float = 0.0) -> AnswerabilityModel:
    # P(answerable) rises with coverage: the grounded Kestrel answer gets sigmoid(bias + 2)
    return AnswerabilityModel({"coverage": 2.0}, bias, {"coverage": 0.0}, {"coverage": 1.0}, threshold, "test")


def test_below_the_threshold_the_pipeline_abstains_and_the_record_says_why(kestrel: Any) -> None:
    result = _pipeline(kestrel, _model(0.99)).answer(KESTREL_QUESTION, ["ops"])
    v = result.verification
    assert v.abstained and v.reason.startswith(f"{REASON_JUDGED_UNANSWERABLE}: the evidence gives 0.88")
    assert "below 0.99" in v.reason and "coverage 1.00" in v.reason
    assert result.answerability is not None and result.answerability["p_answerable"] == pytest.approx(0.880797)
    body = AuditLog(kestrel.stores.ledger).get(result.audit_id).body
    evidence = body["answerability"]["evidence"]
    assert evidence == result.answerability and evidence["threshold"] == 0.99 and evidence["fitted_on"] == "test"
    assert set(evidence["features"]) == set(FEATURES)
    # what the model said is kept for the auditor, though it is not shown
    assert body["raw_output"] == KESTREL_ANSWER and body["abstained"] is True and body["reason"] == v.reason


def test_at_or_above_the_threshold_the_answer_is_shown_with_its_signals(kestrel: Any) -> None:
    shown = _pipeline(kestrel, _model(0.5)).answer(KESTREL_QUESTION, ["ops"])
    assert not shown.verification.abstained and "Tuesday" in shown.answer
    assert shown.answerability is not None and shown.answerability["p_answerable"] > 0.5
    # with no model the signals are still recorded, and nothing is decided
    free = _pipeline(kestrel, None).answer(KESTREL_QUESTION, ["ops"])
    assert not free.verification.abstained
    assert free.answerability is not None and set(free.answerability) == {"features"}
    assert free.to_dict()["answerability"] == free.answerability


def test_the_settings_choose_the_fitted_model_and_its_threshold(
    kestrel: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kag.cli.runtime import Runtime
    from pipelines import answerability
    from tests.kag.api.conftest import api_settings

    assert kestrel.answerability() is None  # no model was fitted for the scripted weights
    fitted = _model(0.6)
    monkeypatch.setitem(answerability.TUNED, kestrel.generator.model_sha256, fitted)
    assert kestrel.answerability() == fitted
    for value, expected in ((0.25, 0.25), (0.0, 0.0)):
        runtime = Runtime(api_settings(tmp_path / f"d{value}", answer_min_evidence=value))
        runtime.__dict__["generator"] = kestrel.generator
        model = runtime.answerability()
        assert model is not None and model.threshold == expected and model.weights == fitted.weights
        runtime.close()


def _records(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([json.dumps({"header": True})] + [json.dumps(r) for r in rows]) + "\n")
    return path


def _row(impossible: bool, coverage: float, gold: bool = False) -> dict[str, Any]:
    features = {name: 0.5 for name in FEATURES} | {"coverage": coverage}
    return {
        "question": "When are Kestrel releases deployed?",
        "is_impossible": impossible,
        "abstained": False,
        "contains_gold": gold,
        "p_answerable": 0.8,
        "answerability": {"features": features},
        "error": None,
    }


def test_the_tuning_script_fits_chooses_a_threshold_and_reports_held_out_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tune = [_row(False, 0.7 + i / 100, gold=True) for i in range(10)] + [_row(True, 0.3 + i / 100) for i in range(10)]
    held = [_row(False, 0.8, gold=True), _row(False, 0.35), _row(True, 0.32), _row(True, 0.9)]
    out = tmp_path / "model.json"
    argv = ["tune_answerability.py", "--tune", str(_records(tmp_path / "seed1" / "answers.jsonl", tune))]
    argv += ["--report", str(_records(tmp_path / "seed2" / "answers.jsonl", held)), "--write", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--answer-rate-floor", "0"])
    monkeypatch.syspath_prepend(str(REPO))
    runpy.run_path(str(REPO / "scripts" / "tune_answerability.py"), run_name="__main__")
    printed = capsys.readouterr().out
    model = AnswerabilityModel.from_dict(json.loads(out.read_text()))
    assert model.weights["coverage"] > 0 and 0 < model.threshold < 1 and model.fitted_on == "seed1"
    assert "Youden's J = 1.000" in printed  # the tuning sample is separable by coverage
    # held out: one answerable question with low coverage is lost, one unanswerable with high coverage passes
    (line,) = [row for row in printed.splitlines() if row.startswith("| seed2 | 4 |")]
    assert line.startswith("| seed2 | 4 | 0.500 (") and "| 0.500 (" in line

    # by default the threshold keeps an answer rate of 0.80 on the tuning sample and abstains on the most
    monkeypatch.setattr(sys, "argv", argv)
    script = runpy.run_path(str(REPO / "scripts" / "tune_answerability.py"), run_name="__main__")
    assert "with an answer rate >= 0.80 on the tuning sample" in capsys.readouterr().out
    # as the pipeline, a comparison question is not decided: whatever its signals, it is not abstained on
    low = {name: 0.0 for name in FEATURES}
    score = script["model_score"](model)
    assert score({"question": "When are Kestrel releases deployed?", "answerability": {"features": low}}) < 0.5
    assert (
        score({"question": "Who is younger, Keith Bostic or Jerry Glanville?", "answerability": {"features": low}})
        == 1.0
    )


def test_the_shipped_model_for_the_default_generator_separates_clear_cases() -> None:
    from kag.models.catalog import DEFAULT_LLM_MODEL, MODELS
    from pipelines.answerability import TUNED

    model = TUNED[MODELS[DEFAULT_LLM_MODEL].sha256]
    assert 0 < model.threshold < 1 and set(model.weights) == set(FEATURES) and model.fitted_on
    # every word of the question in the quote cited, the model sure: shown; nothing of it cited, the model
    # unsure, words missing from every source: abstained
    covered = {"probe": 2.0, "coverage": 1.0, "missing": 0.0, "cited_coverage": 1.0, "support": 0.95, "kept": 1.0}
    uncovered = {"probe": 0.3, "coverage": 0.4, "missing": 0.5, "cited_coverage": 0.1, "support": 0.7, "kept": 0.0}
    assert model.probability(covered) > model.threshold > model.probability(uncovered)


class _Recording(ScriptedGenerator):
    """The scripted model, keeping the text it was asked to pick a short answer from."""

    picked_from: list[str] = []

    def complete(self, prompt: str, *, sampling: Any = None) -> Any:
        self.picked_from.append(prompt.partition("Text: ")[2].partition("\nQuestion:")[0])
        return super().complete(prompt, sampling=sampling)


def test_a_bridge_answer_quotes_its_premise_and_the_short_answer_comes_from_the_model_part(
    tmp_path: Path, embedder: Any
) -> None:
    from kag.cli.runtime import Runtime
    from tests.kag.api.conftest import api_settings

    runtime = Runtime(api_settings(tmp_path / "data"))
    runtime.__dict__["embedder"] = embedder
    try:
        folder = tmp_path / "corpus"
        folder.mkdir()
        (folder / "kiss.md").write_text(
            "# Kiss and Tell (1945 film)\n\nKiss and Tell is a 1945 film starring Shirley Temple as Corliss Archer.\n"
        )
        (folder / "temple.md").write_text(
            "# Shirley Temple\n\nShirley Temple was an American actress. She served as Chief of Protocol of the "
            "United States.\n"
        )
        assert runtime.ingestor.ingest([folder], "films").status == "completed"
        generator = _Recording("Shirley Temple served as Chief of Protocol of the United States.", 0.0)
        generator.picked_from = []
        runtime.__dict__["generator"] = generator
        question = "What government position was held by the woman who portrayed Corliss Archer in Kiss and Tell?"
        result = _pipeline(runtime, None).answer(question, ["films"])
        v = result.verification
        assert not v.abstained
        (added,) = [s for s in v.sentences if s.action == "added"]
        assert "Corliss Archer" in added.text and added.citations[0].quote.startswith("Kiss and Tell is a 1945")
        assert len({c.document_id for c in v.citations}) == 2  # both links of the chain are cited
        # the short answer is picked from what the model said, not from the quote kag added
        (text,) = generator.picked_from
        assert "Chief of Protocol" in text and "1945" not in text
        body = AuditLog(runtime.stores.ledger).get(result.audit_id).body
        assert [v["action"] for v in body["verdicts"]][-1] == "added"
    finally:
        runtime.__dict__.pop("embedder")
        runtime.close()


def test_a_comparison_question_is_recorded_not_decided(kestrel: Any) -> None:
    # the model was fitted on single-passage questions: a comparison's signals are kept, its answer shown
    question = "Which is deployed every Tuesday, Kestrel or Rollbacks?"
    result = _pipeline(kestrel, _model(0.99)).answer(question, ["ops"])
    assert not result.verification.abstained and "Tuesday" in result.answer
    assert result.answerability is not None and set(result.answerability["features"]) == set(FEATURES)
    assert result.answerability["not_decided"].startswith("comparison question")
    assert "p_answerable" not in result.answerability
    body = AuditLog(kestrel.stores.ledger).get(result.audit_id).body
    assert body["answerability"]["evidence"]["not_decided"] == result.answerability["not_decided"]
