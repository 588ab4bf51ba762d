"""`kag eval answers` as a long run: records written as it goes, a killed run resumed to the same summary,
another configuration refused, two datasets in one command, progress on stderr.

Real stores, embedder, spaCy and verifier; the LLM is a scripted generator implementing the answer
pipeline's `Generator` protocol, so a run can be killed after exactly k questions."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kag.cli import app
from kag.cli.runtime import Runtime
from pipelines.generate import Completion

runner = CliRunner()

PASSAGES = [
    {
        "_id": "p0",
        "title": "Normans",
        "text": "The Normans gave their name to Normandy, a region in France. "
        "Their leader Rollo swore fealty to King Charles III.",
    },
    {"_id": "p1", "title": "Tides", "text": "Tides are caused by the gravity of the Moon and the Sun."},
    {"_id": "p2", "title": "Copper", "text": "Copper ore is smelted in a blast furnace at high heat."},
    {"_id": "p3", "title": "Honeybees", "text": "Honeybees perform a waggle dance to show nestmates food."},
]
QUESTIONS = [
    ("a", "In what country is Normandy located?", "France", "p0"),
    ("b", "What causes tides?", "the gravity of the Moon and the Sun", "p1"),
    ("c", "Who swore fealty to King Charles III?", "Rollo", "p0"),
    ("d", "Where is copper ore smelted?", "in a blast furnace", "p2"),
    ("e", "What dance do honeybees perform?", "a waggle dance", "p3"),
]


class Killed(Exception):
    """Stands for the process dying mid-run (not a KagError, so nothing records it as a question's error)."""


class ScriptedGenerator:
    """The `pipelines.answer.Generator` protocol: answers with the first sentence of source [1], cited."""

    def __init__(self, model_file: Path, *, kill_after: int | None = None) -> None:
        self._path = str(model_file)
        self.kill_after = kill_after
        self.prompts = 0

    @property
    def model_path(self) -> str:
        return self._path

    @property
    def model_sha256(self) -> str:
        return hashlib.sha256(Path(self._path).read_bytes()).hexdigest()

    def model_info(self) -> dict[str, Any]:
        return {"path": self._path, "sha256": self.model_sha256, "n_ctx": 2048}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_budget(self, max_tokens: int | None = None) -> int:
        # asked once per question, before the pipeline decides whether the model answers
        if self.kill_after is not None and self.prompts >= self.kill_after:
            raise Killed(f"killed after {self.prompts} questions")
        self.prompts += 1
        return 1500

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return messages[-1]["content"]

    def yes_probability(self, prompt: str) -> float:
        return 0.9  # the sources always look like they answer

    def stream(self, prompt: str, *, sampling: Any = None, continue_probe: bool = False) -> Iterator[str]:
        found = re.search(r"^\[1\] \([^)]*\) (.+?[.!?])(?:\s|$)", prompt, re.MULTILINE)
        answer = f"{found.group(1)} [1]" if found else "Not in the sources."
        for word in answer.split(" "):
            yield word + " "

    def complete(self, prompt: str, *, sampling: Any = None) -> Completion:
        # the short-answer pick: the last two words of the verified text, a piece of it by construction
        text = prompt.partition("Text: ")[2].partition("\nQuestion:")[0]
        phrase = " ".join(text.split()[-2:]).strip(".")
        return Completion(
            phrase, prompt_tokens=len(prompt.split()), completion_tokens=2, seconds=0.0, finish_reason="stop"
        )


def write_squad(root: Path, questions: Sequence[tuple[str, str, str, str]] = QUESTIONS) -> Path:
    (root / "beir").mkdir(parents=True)
    (root / "beir" / "corpus.jsonl").write_text("\n".join(json.dumps(p) for p in PASSAGES))
    texts = {p["_id"]: p["text"] for p in PASSAGES}
    lines = [
        {
            "id": qid,
            "question": question,
            "is_impossible": False,
            "answers": [answer],
            "answer_starts": [texts[pid].index(answer)],
            "gold_passage_id": pid,
        }
        for qid, question, answer, pid in questions
    ]
    lines.append(
        {"id": "z", "question": "What is the boiling point of mercury on Mars?", "is_impossible": True, "answers": []}
    )
    (root / "examples.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    return root / "examples.jsonl"


def write_hotpot(path: Path) -> Path:
    rows = [
        {
            "_id": "h1",
            "question": "Which region did the Normans name?",
            "answer": "Normandy",
            "context": [["Normans", ["The Normans gave their name to Normandy. ", "Rollo led them."]]],
            "supporting_facts": [["Normans", 0]],
        },
        {
            "_id": "h2",
            "question": "What do tidal turbines make?",
            "answer": "electricity",
            "context": [["Tidal energy", ["Tidal turbines turn seawater flow into electricity."]]],
            "supporting_facts": [["Tidal energy", 0]],
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "scripted.gguf"
    model.write_bytes(b"scripted generator v1")
    return {
        "KAG_DATA_DIR": str(tmp_path / "user-data"),
        "KAG_CHUNK_SIZE": "64",
        "KAG_CHUNK_OVERLAP": "8",
        "KAG_LLM_MODEL": str(model),  # a GGUF path (the suite pins KAG_LLM_MODEL, so not the older name)
        "KAG_CONTEXT_CHUNKS": "2",
    }


@pytest.fixture
def use_generator(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every Runtime built by the command answers with the given generator."""

    def install(generator: ScriptedGenerator) -> ScriptedGenerator:
        monkeypatch.setattr(Runtime, "generator", property(lambda self: generator))
        return generator

    return install


def answers(env: dict[str, str], *args: str) -> Any:
    return runner.invoke(app, ["eval", "answers", *args], env=env)


def without_timings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("timings_ms", "timings_s")} for r in rows]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_summary(
    env: dict[str, str], tmp_path: Path, use_generator: Any
) -> None:
    dataset = write_squad(tmp_path / "qa")
    model = Path(env["KAG_LLM_MODEL"])
    work, out = tmp_path / "work", tmp_path / "out"
    args = ["--dataset", str(dataset), "--work-dir", str(work), "--out", str(out)]
    records = out / "answers.jsonl"

    # 1. the run dies while answering the fourth question: three records are on disk
    use_generator(ScriptedGenerator(model, kill_after=3))
    killed = answers(env, *args)
    assert killed.exit_code != 0 and isinstance(killed.exception, Killed)
    lines = records.read_text().splitlines()
    assert len(lines) == 1 + 3
    assert [json.loads(line)["id"] for line in lines[1:]] == ["a", "b", "c"]
    assert not (out / "answers.json").exists()
    first = json.loads(lines[1])
    assert set(first["timings_s"]) >= {"retrieve", "rerank", "generate", "verify", "total"}
    assert first["timings_s"]["total"] >= first["timings_s"]["generate"] >= 0
    # ... and it died in the middle of writing a fourth line
    with records.open("a") as handle:
        handle.write('{"fingerprint": "0123", "id": "d", "quest')

    # 2. the same command resumes: only the three questions left are asked
    resumed_generator = use_generator(ScriptedGenerator(model))
    resumed = answers(env, *args, "--progress")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed_generator.prompts == 3
    assert f"resuming from {records}: 3 of 6 questions already answered" in " ".join(resumed.stderr.split())
    report = json.loads((out / "answers.json").read_text())
    assert report["questions"] == 6
    assert report["records"] | {"file": None, "fingerprint": None} == {
        "file": None,
        "fingerprint": None,
        "resumed": 3,
        "answered_now": 3,
    }
    assert [json.loads(line)["id"] for line in records.read_text().splitlines()[1:]] == ["a", "b", "c", "d", "e", "z"]
    # the progress bar starts at the resumed count and ends at 6/6 with running metrics
    assert re.search(r"qa .*━ 6/6 EM \d\.\d\d F1 \d\.\d\d ans \d+% err 0", resumed.stderr), resumed.stderr

    # 3. an uninterrupted run of the same configuration, here together with a HotpotQA file in one command
    hotpot = write_hotpot(tmp_path / "hotpot.jsonl")
    whole_generator = use_generator(ScriptedGenerator(model))
    out2 = tmp_path / "out2"
    both = answers(
        env, "--dataset", str(dataset), "--dataset", str(hotpot), "--work-dir", str(work), "--out", str(out2)
    )
    assert both.exit_code == 0, both.stderr
    assert whole_generator.prompts == 6 + 2
    whole = json.loads((out2 / "qa" / "answers.json").read_text())
    assert whole["metrics"] == report["metrics"]
    assert without_timings(whole["per_question"]) == without_timings(report["per_question"])
    assert whole["metrics"]["exact_match"] > 0  # the scripted answers do hit some gold answers
    hot = json.loads((out2 / "hotpot" / "answers.json").read_text())
    assert hot["kind"] == "hotpotqa" and hot["questions"] == 2
    assert len((out2 / "hotpot" / "answers.jsonl").read_text().splitlines()) == 1 + 2
    for stage in ("retrieve", "generate", "verify", "total"):
        assert whole["latency_ms"][stage]["p95"] >= whole["latency_ms"][stage]["p50"] >= 0
    assert "| exact match (all) |" in both.stdout and "# Answers: hotpot" in both.stdout

    # 4. a finished run rerun answers nothing and reports the same summary
    idle = use_generator(ScriptedGenerator(model))
    again = answers(env, *args, "--json")
    assert again.exit_code == 0, again.stderr
    assert idle.prompts == 0
    assert json.loads(again.stdout)["metrics"] == report["metrics"]

    # 5. another configuration is refused before any question, and the records are untouched
    before = records.read_bytes()
    changed = answers(env | {"KAG_LLM_SEED": "7"}, *args)
    assert changed.exit_code == 1
    message = " ".join(changed.stderr.split())
    assert message.startswith("Error: ") and "holds 6 answer record(s) of another configuration" in message
    assert "settings.llm_seed: 42 -> 7" in message and "--restart" in message
    assert records.read_bytes() == before
    assert idle.prompts == 0
    model.write_bytes(b"scripted generator v2")  # other weights under the same path are another configuration
    other_model = answers(env, *args)
    assert other_model.exit_code == 1 and "model_sha256" in other_model.stderr
    assert records.read_bytes() == before

    # 6. --restart starts the file over under the new configuration
    fresh = use_generator(ScriptedGenerator(model))
    restarted = answers(env | {"KAG_LLM_SEED": "7"}, *args, "--restart", "--limit", "2")
    assert restarted.exit_code == 0, restarted.stderr
    assert fresh.prompts == 2
    assert len(records.read_text().splitlines()) == 1 + 2


def test_bad_multi_dataset_options_fail_before_any_work(env: dict[str, str], tmp_path: Path) -> None:
    dataset = write_squad(tmp_path / "qa")
    hotpot = write_hotpot(tmp_path / "hotpot.jsonl")
    work = tmp_path / "w"
    result = answers(
        env,
        "--dataset",
        str(dataset),
        "--dataset",
        str(hotpot),
        "--passages",
        str(tmp_path / "qa" / "beir" / "corpus.jsonl"),
        "--work-dir",
        str(work),
    )
    assert result.exit_code == 1 and "--passages names the passages of one dataset" in " ".join(result.stderr.split())

    twin = write_squad(tmp_path / "other" / "qa")
    result = answers(env, "--dataset", str(dataset), "--dataset", str(twin), "--work-dir", str(work))
    assert result.exit_code == 1 and "two datasets are both named 'qa'" in result.stderr

    repeated = tmp_path / "rep" / "examples.jsonl"
    write_squad(tmp_path / "rep", [QUESTIONS[0], QUESTIONS[0]])
    result = answers(env, "--dataset", str(repeated), "--work-dir", str(work))
    assert result.exit_code == 1 and "question id 'a' occurs more than once" in result.stderr
    assert not work.exists() and not (tmp_path / "eval-results").exists()
