"""The answer record file: resumable after a kill (even mid-line), never mixing configurations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kag.errors import EvaluationError
from pipelines.evaluation.answer_log import HEADER_KIND, AnswerLog, config_changes, config_fingerprint
from pipelines.evaluation.answers import QuestionResult, summarize

CONFIG = {"model_sha256": "ab" * 32, "policy": "extractive", "settings": {"llm_seed": 42, "rrf_k": 60}}


def result(qid: str, *, em: float = 1.0, abstained: bool = False) -> QuestionResult:
    return QuestionResult(
        id=qid,
        question=f"question {qid}?",
        is_impossible=False,
        gold_answers=["France"],
        answer="France [1]",
        prediction="France",
        abstained=abstained,
        reason="",
        exact_match=em,
        f1=0.5 + em / 2,
        contains_gold=True,
        citations=[{"document_id": "d1", "char_start": 3, "char_end": 9, "on_gold": True}],
        evidence=[{"document_id": "d1", "char_start": 3, "char_end": 9}],
        evidence_mapped=True,
        cited_gold=True,
        timings_ms={"retrieve": 12.5, "generate": 900.25, "verify": 40.0, "total": 960.0},
        timings_s={"retrieve": 0.0125, "generate": 0.9003, "verify": 0.04, "total": 0.96},
    )


def test_records_read_back_equal_and_the_summary_is_the_same(tmp_path: Path) -> None:
    path = tmp_path / "out" / "answers.jsonl"
    written = [result("a"), result("b", em=0.0), result("c", abstained=True)]
    with AnswerLog.open(path, CONFIG) as log:
        assert log.done == {}
        for r in written:
            log.append(r)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["kind"] == HEADER_KIND and header["config"] == CONFIG
    assert header["fingerprint"] == config_fingerprint(CONFIG)
    assert len(lines) == 4 and all(json.loads(line)["fingerprint"] == header["fingerprint"] for line in lines[1:])

    with AnswerLog.open(path, dict(CONFIG)) as again:
        assert list(again.done) == ["a", "b", "c"]
        assert list(again.done.values()) == written
        assert summarize(list(again.done.values())) == summarize(written)
        again.append(result("d"))
    with AnswerLog.open(path, CONFIG) as third:
        assert list(third.done) == ["a", "b", "c", "d"]


def test_a_line_torn_by_a_kill_is_dropped_and_the_file_stays_appendable(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    with AnswerLog.open(path, CONFIG) as log:
        log.append(result("a"))
        log.append(result("b"))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"fingerprint": "' + config_fingerprint(CONFIG).encode() + b'", "id": "c", "ques')
    with AnswerLog.open(path, CONFIG) as log:
        assert list(log.done) == ["a", "b"]  # c is answered again
        assert path.read_bytes() == whole
        log.append(result("c"))
    with AnswerLog.open(path, CONFIG) as log:
        assert list(log.done) == ["a", "b", "c"]


def test_another_configuration_is_refused_naming_what_changed_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    with AnswerLog.open(path, CONFIG) as log:
        log.append(result("a"))
    before = path.read_bytes()
    changed = {**CONFIG, "settings": {"llm_seed": 7, "rrf_k": 60}, "policy": "flag"}
    with pytest.raises(EvaluationError) as caught:
        AnswerLog.open(path, changed)
    message = str(caught.value)
    assert "holds 1 answer record(s) of another configuration" in message
    assert "settings.llm_seed: 42 -> 7" in message and "policy: 'extractive' -> 'flag'" in message
    assert "rrf_k" not in message
    assert "--restart" in message
    assert path.read_bytes() == before

    with AnswerLog.open(path, changed, restart=True) as log:  # an explicit restart starts the file over
        assert log.done == {}
    assert json.loads(path.read_text().splitlines()[0])["config"] == changed
    assert len(path.read_text().splitlines()) == 1


def test_config_changes_lists_added_and_removed_keys() -> None:
    assert config_changes({"a": {"b": 1}}, {"a": {"b": 1, "c": None}}) == ["a.c: '(unset)' -> None"]
    assert config_changes({"x": 1}, {"x": 1}) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json at all\n", "is not a kag answer-record file"),
        ('{"kind": "something-else"}\n', "is not a kag answer-record file"),
        (None, "line 3 is not a valid answer record"),
    ],
)
def test_a_foreign_or_damaged_file_is_refused(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "answers.jsonl"
    if content is None:
        with AnswerLog.open(path, CONFIG) as log:
            log.append(result("a"))
        with path.open("a") as handle:
            handle.write('["not", "a", "record"]\n')
            handle.write(json.dumps({"fingerprint": config_fingerprint(CONFIG), "id": "z"}) + "\n")
    else:
        path.write_text(content)
    before = path.read_bytes()
    with pytest.raises(EvaluationError, match=message):
        AnswerLog.open(path, CONFIG)
    assert path.read_bytes() == before
