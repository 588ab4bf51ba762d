"""The verifier on what small models really write: negations, swapped entities, headings, markdown,
yes/no conclusions, and quotes as small as the claim.

Sources are slices of the demo corpus files (so offsets are document offsets); the model sentences are
outputs captured from the bundled models on the demo questions (quoted in issue 14 and in the answer
evaluation logs), not sentences written to suit the check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kag.records import SearchHit, Source, verdict_summary
from pipelines.generate import RepetitionGuard
from pipelines.verify import (
    Verifier,
    binding_clash,
    candidate_spans,
    is_heading,
    number_clash,
    plain_answer,
    polarity_clash,
    split_answer,
    yes_no_lead,
)

DATA = Path(__file__).resolve().parents[2] / "data"


def file_source(number: int, relative: str, start_marker: str, end_marker: str | None = None) -> Source:
    """A chunk of a demo file from `start_marker` to the end of the paragraph holding `end_marker`."""
    text = (DATA / relative).read_text(encoding="utf-8")
    start = text.index(start_marker)
    end = text.index("\n\n", text.index(end_marker or start_marker)) if "\n\n" in text[start:] else len(text)
    hit = SearchHit(f"c{number}", 1.0, relative, "demo", relative, relative, text[start:end], start, end, None, ())
    return Source(number, hit)


@pytest.fixture(scope="module")
def remote() -> Source:
    return file_source(1, "handbook/remote-work.md", "## Anchor days", "Office-based employees are in the office")


@pytest.fixture(scope="module")
def onboarding() -> Source:
    return file_source(2, "handbook/onboarding.md", "- You understand how your team's service fits")


@pytest.fixture(scope="module")
def welcome() -> Source:
    return file_source(3, "handbook/welcome.md", "- **Magpie** is our internal message broker.")


# --- polarity ---------------------------------------------------------------------------------


def test_negated_claim_against_a_positive_source_is_a_clash() -> None:
    assert polarity_clash(
        "Tuesday, Wednesday and Thursday are not anchor days.",
        "Office-based employees are in the office on Tuesday, Wednesday and Thursday, which we call anchor days.",
    )
    assert not polarity_clash("Anchor days are Tuesday, Wednesday and Thursday.", "We call them anchor days.")


def test_the_captured_not_anchor_days_answer_is_not_supported(embedder, remote: Source) -> None:
    # SmolLM2-135M on "Which days are anchor days?" (issue 14): a colon lead-in that was passed as
    # supported (0.92), and the negated claim a model writes next
    lead_in = Verifier(embedder, policy="flag").verify(
        "Which days are anchor days?", "The days that are not anchor days are: [1]", [remote]
    )
    assert lead_in.abstained and not any(v.supported for v in lead_in.sentences)
    negated = Verifier(embedder, policy="flag").verify(
        "Which days are anchor days?", "Tuesday, Wednesday and Thursday are not anchor days [1].", [remote]
    )
    assert [v.supported for v in negated.sentences] == [False]


def test_extractive_policy_replaces_the_negated_claim_with_the_positive_quote(embedder, remote: Source) -> None:
    raw = "Tuesday, Wednesday and Thursday are not anchor days [1]."
    result = Verifier(embedder, policy="extractive").verify("Which days are anchor days?", raw, [remote])
    assert not result.abstained
    (verdict,) = result.sentences
    assert verdict.action == "replaced" and not verdict.model_supported
    assert verdict.label == "replaced (model sentence unsupported)"
    assert "which we call anchor days" in verdict.text and "not" not in verdict.text


# --- swapped entities -------------------------------------------------------------------------


def test_name_bound_to_another_noun_is_a_binding_clash(onboarding: Source) -> None:
    claim = "Heron depends on the Magpie database."
    assert ("magpi", "databas") in binding_clash(claim, onboarding.hit.text)
    assert binding_clash("Heron consumes usage events from the Magpie broker.", onboarding.hit.text) == []


def test_the_captured_magpie_database_answer_is_not_supported(embedder, onboarding: Source, welcome: Source) -> None:
    # SmolLM2-135M on "What does Heron depend on?" (issue 14): Magpie is a broker in every source
    raw = "According to [1], Heron depends on the Magpie database."
    result = Verifier(embedder, policy="flag").verify("What does Heron depend on?", raw, [onboarding, welcome])
    assert [v.supported for v in result.sentences] == [False]


# --- headings, header blocks, markdown --------------------------------------------------------


def test_headings_and_header_blocks_are_never_quoted(embedder) -> None:
    text = (DATA / "support" / "runbook-heron-billing.txt").read_text(encoding="utf-8")
    hit = SearchHit("c1", 1.0, "rb", "demo", "Runbook", "rb", text[:1500], 0, 1500, None, ())
    spans = candidate_spans([Source(1, hit)])
    assert spans
    for span in spans:
        for line in span.text.split("\n"):
            assert not (is_heading(line) and span.single and line.strip() == span.text.strip())
    assert all(len(s.text) < 518 for s in spans if s.single)


def test_heading_detection() -> None:
    assert is_heading("Heron Billing Service")
    assert is_heading("RUNBOOK: MAGPIE MESSAGE BROKER")
    assert not is_heading("Magpie is our internal message broker.")
    assert not is_heading("the rate rises after three years")


def test_markdown_and_reply_labels_are_stripped_from_the_answer() -> None:
    raw = "Answer: ## Heron Billing Service\n**Heron** consumes usage events from the `Magpie` broker [2]."
    assert plain_answer(raw) == "Heron consumes usage events from the Magpie broker [2]."
    assert plain_answer("Answerable: yes\nAnswer: No, it does not.") == "No, it does not."
    assert [s.text for s in split_answer(plain_answer("# Title\n\n- **One** fact [1].\n- Two facts [1]."))] == [
        "One fact.",
        "Two facts.",
    ]


# --- yes/no -----------------------------------------------------------------------------------


def test_yes_no_lead_is_split_from_its_reasons() -> None:
    assert yes_no_lead("Yes, both are American [1][2].") == ("yes", "Both are American [1][2].")
    assert yes_no_lead("No. The Magpie broker is older [1].") == ("no", "The Magpie broker is older [1].")
    assert yes_no_lead("Nobody knows.") == (None, "Nobody knows.")


def test_a_yes_no_answer_keeps_its_conclusion_and_verifies_its_reason(embedder, welcome: Source) -> None:
    raw = "Yes, the Platform team owns Magpie [3]."
    result = Verifier(embedder, policy="extractive").verify("Does the Platform team own Magpie?", raw, [welcome])
    assert not result.abstained and result.conclusion == "yes"
    assert result.answer.startswith("Yes. ")
    assert [v.action for v in result.sentences] == ["kept"]


# --- quotes and labels ------------------------------------------------------------------------


def test_the_replacement_quote_is_the_smallest_supporting_sentence(embedder, welcome: Source) -> None:
    raw = "Magpie belongs to the Billing team [3]."  # wrong owner: replaced by a quote
    result = Verifier(embedder, policy="extractive").verify("Who owns Magpie?", raw, [welcome])
    (verdict,) = result.sentences
    assert verdict.action == "replaced"
    quote = verdict.citations[0].quote
    assert "The Platform team owns Magpie." == quote


def test_verdict_summary_counts_replaced_apart() -> None:
    from kag.records import SentenceVerdict

    verdicts = [SentenceVerdict("q", "m", True, 0.7, "replaced") for _ in range(3)]
    assert verdict_summary(verdicts) == "0/3 model sentences supported, 3 replaced by quotes"
    assert verdicts[0].to_dict()["label"] == "replaced (model sentence unsupported)"


# --- repetition -------------------------------------------------------------------------------


def test_repetition_guard_stops_a_loop_and_keeps_the_first_pass() -> None:
    # SmolLM2-135M on the demo corpus (issue 14), streamed in pieces as llama.cpp yields them
    loop = "Heron is run by a company called Gold. " * 6
    guard = RepetitionGuard()
    stopped_at = None
    for i in range(0, len(loop), 5):
        if guard.feed(loop[i : i + 5]):
            stopped_at = i
            break
    assert stopped_at is not None and stopped_at < len(loop) // 2
    assert guard.text == "Heron is run by a company called Gold."
    plain = RepetitionGuard()
    assert not plain.feed("A short answer that never repeats itself at all [1].")
    assert plain.text == "A short answer that never repeats itself at all [1]."


def test_a_number_bound_to_the_wrong_unit_is_a_clash() -> None:
    evidence = "Full-time employees accrue 1.5 days of paid time off per month, which adds up to 18 days per year."
    assert number_clash("Full-time employees accrue 18 days per month.", evidence) == [("18", "month")]
    assert number_clash("Employees accrue 1.5 days per month.", evidence) == []
    assert number_clash("That adds up to 18 days per year.", evidence) == []


def test_the_captured_18_days_per_month_answer_is_not_supported(embedder) -> None:
    # Qwen2.5-Coder-0.5B on the first demo question: every word and number is in the source, the fact is not
    source = file_source(1, "handbook/paid-time-off.md", "Full-time employees accrue")
    raw = " Full-time employees accrue 18 days per month."
    question = "How many days of paid time off do full-time employees accrue per month?"
    flagged = Verifier(embedder, policy="flag").verify(question, raw, [source])
    assert [v.supported for v in flagged.sentences] == [False]
    replaced = Verifier(embedder, policy="extractive").verify(question, raw, [source])
    assert "1.5 days" in replaced.answer and replaced.sentences[0].label.startswith("replaced")


def test_a_quote_from_a_markdown_source_shows_no_markdown_but_cites_the_exact_characters(embedder) -> None:
    source = file_source(1, "handbook/paid-time-off.md", "- Full-time employees accrue")
    raw = "Full-time employees accrue 18 days per month."
    result = Verifier(embedder, policy="extractive").verify("How much PTO per month?", raw, [source])
    assert "**" not in result.answer and "1.5 days of PTO per month" in result.answer
    (citation,) = result.citations
    text = (DATA / "handbook" / "paid-time-off.md").read_text(encoding="utf-8")
    assert text[citation.char_start : citation.char_end] == citation.quote and "**" in citation.quote


def test_a_compound_name_is_one_name_for_the_binding_check(embedder) -> None:
    # Qwen2.5-Coder-0.5B on "What is the default rate limit of the Osprey API gateway?" (demo corpus):
    # a faithful paraphrase that the name-binding check must let through
    evidence = (
        "The Osprey gateway rate limit is 900 requests per minute per API key, with bursts of up to 150 "
        "requests allowed."
    )
    claim = "The default rate limit of the Osprey API gateway is 900 requests per minute per API key."
    assert binding_clash(claim, evidence) == []
    hit = SearchHit("c1", 1.0, "osprey", "demo", "Osprey API", "osprey", evidence, 0, len(evidence), None, ())
    result = Verifier(embedder, policy="flag").verify(
        "What is the default rate limit of the Osprey API gateway?", claim, [Source(1, hit)]
    )
    assert [v.action for v in result.sentences] == ["kept"]


def test_a_choice_answered_in_the_questions_words_is_not_called_ungrounded(embedder) -> None:
    # Qwen2.5-Coder-0.5B on HotpotQA "who is younger Keith Bostic or Jerry Glanville ?": the answer names one
    # of the options, so it adds no word to the question; it was abstained on as "ungrounded" (0.00)
    from pipelines.verify import REASON_UNGROUNDED, is_choice_question

    text = "Keith Bostic (born January 17, 1961) is a former American football player. Jerry Glanville was born 1941."
    hit = SearchHit("c1", 1.0, "kb", "hp", "Keith Bostic", "kb", text, 0, len(text), None, ())
    question = "who is younger Keith Bostic or Jerry Glanville ?"
    assert is_choice_question(question) and is_choice_question("Are both Cypress and Ajuga genera?")
    assert not is_choice_question("Who owns Magpie?")
    result = Verifier(embedder, policy="extractive").verify(question, "Keith Bostic.", [Source(1, hit)])
    assert not result.reason.startswith(REASON_UNGROUNDED)


def test_a_sentence_about_the_sources_is_no_claim() -> None:
    # Qwen2.5-Coder-0.5B on "What caused incident INC-3107?" (make demo): it echoed the answerability line
    raw = "The sources contain the answer. The incident INC-3107 was caused by an expired TLS certificate [2]."
    assert [s.text for s in split_answer(raw)] == ["The incident INC-3107 was caused by an expired TLS certificate."]
    assert [s.text for s in split_answer("The sources do not contain the answer.")] == [
        "The sources do not contain the answer."
    ]  # a refusal stays: it is how the model abstains
