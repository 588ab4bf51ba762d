"""Evaluation datasets read at run time: BEIR retrieval folders and SQuAD/HotpotQA-style answer files."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kag.errors import EvaluationError

Qrels = dict[str, dict[str, int]]


def evaldata(name: str) -> Path:
    """`$EVALDATA/name`: where the benchmark scripts find public evaluation data (never shipped)."""
    root = os.environ.get("EVALDATA")
    if not root:
        raise EvaluationError(
            f"no evaluation data folder for {name!r}",
            hint="set EVALDATA to a folder holding BEIR-format scifact/, cranfield/ and squad2_dev_5articles/",
        )
    return Path(root).expanduser() / name


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is an error naming file and line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvaluationError(
                        f"{path}: malformed JSON on line {number}, column {exc.colno}: {exc.msg}",
                        hint="a .jsonl file holds exactly one JSON object per line",
                        path=str(path),
                        line=number,
                    ) from exc
                if not isinstance(value, dict):
                    raise EvaluationError(
                        f"{path}: line {number} is a {type(value).__name__}, not a JSON object", path=str(path)
                    )
                yield number, value
        except UnicodeDecodeError as exc:
            raise EvaluationError(f"{path} is not UTF-8 text: {exc}", path=str(path)) from exc


def _require_str(record: Mapping[str, Any], keys: tuple[str, ...], path: Path, line: int) -> str:
    for key in keys:
        value = record.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    raise EvaluationError(
        f"{path}: line {line} has no {' or '.join(repr(k) for k in keys)} field", path=str(path), line=line
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CorpusDoc:
    """One corpus document as the dataset gives it."""

    id: str
    title: str
    text: str


@dataclass
class BeirDataset:
    """A BEIR folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`."""

    root: Path
    name: str
    splits: tuple[str, ...]

    @classmethod
    def open(cls, root: str | Path) -> BeirDataset:
        """Check the layout (not the contents) and list the splits."""
        path = Path(root)
        if not path.is_dir():
            raise EvaluationError(
                f"{path} is not a folder", hint="--dataset takes a BEIR folder with corpus.jsonl, queries.jsonl, qrels/"
            )
        for required in ("corpus.jsonl", "queries.jsonl"):
            if not (path / required).is_file():
                raise EvaluationError(
                    f"{path} has no {required}", hint="a BEIR folder holds corpus.jsonl and queries.jsonl"
                )
        qrels_dir = path / "qrels"
        splits = tuple(sorted(p.stem for p in qrels_dir.glob("*.tsv"))) if qrels_dir.is_dir() else ()
        if not splits:
            raise EvaluationError(
                f"{path} has no relevance judgments (qrels/<split>.tsv)",
                hint="add qrels/test.tsv with the columns query-id, corpus-id, score",
            )
        return cls(path.resolve(), path.resolve().name, splits)

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    def corpus_sha256(self) -> str:
        return file_sha256(self.corpus_path)

    def corpus(self) -> Iterator[CorpusDoc]:
        seen: set[str] = set()
        for line, record in _jsonl(self.corpus_path):
            doc_id = _require_str(record, ("_id", "id"), self.corpus_path, line)
            if doc_id in seen:
                raise EvaluationError(f"{self.corpus_path}: line {line} repeats the document id {doc_id!r}")
            seen.add(doc_id)
            title, text = record.get("title") or "", record.get("text") or ""
            if not isinstance(title, str) or not isinstance(text, str):
                raise EvaluationError(f"{self.corpus_path}: line {line}: title and text must be strings")
            yield CorpusDoc(doc_id, title, text)

    def queries(self) -> dict[str, str]:
        out: dict[str, str] = {}
        path = self.root / "queries.jsonl"
        for line, record in _jsonl(path):
            out[_require_str(record, ("_id", "id"), path, line)] = _require_str(record, ("text",), path, line)
        return out

    def qrels(self, split: str) -> Qrels:
        """Positive judgments of one split; a score of 0 or less means not relevant and is left out."""
        if split not in self.splits:
            raise EvaluationError(
                f"unknown split {split!r} for {self.name}", hint=f"available splits: {', '.join(self.splits)}"
            )
        path = self.root / "qrels" / f"{split}.tsv"
        out: Qrels = {}
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
                if not row or not "".join(row).strip():
                    continue
                if number == 1 and not row[-1].strip().lstrip("-").isdigit():
                    continue  # the header: query-id, corpus-id, score
                if len(row) == 4:  # TREC layout: query-id, iteration, corpus-id, score
                    row = [row[0], row[2], row[3]]
                if len(row) != 3:
                    raise EvaluationError(f"{path}: line {number} has {len(row)} columns, expected 3", path=str(path))
                try:
                    score = int(float(row[2]))
                except ValueError as exc:
                    raise EvaluationError(f"{path}: line {number}: score {row[2]!r} is not a number") from exc
                if score > 0:
                    out.setdefault(row[0].strip(), {})[row[1].strip()] = score
        if not out:
            raise EvaluationError(f"{path} holds no positive relevance judgment", path=str(path))
        return out


def evaluation_queries(
    dataset: BeirDataset, split: str, *, limit: int | None = None
) -> tuple[dict[str, str], Qrels, int]:
    """The judged queries of a split (sorted by id, first `limit`), their qrels, and how many judged ids lack text."""
    qrels = dataset.qrels(split)
    texts = dataset.queries()
    missing = [q for q in qrels if q not in texts]
    ids = sorted((q for q in qrels if q in texts), key=_natural)
    if limit is not None:
        ids = ids[:limit]
    if not ids:
        raise EvaluationError(f"no query of split {split!r} has text in queries.jsonl")
    return {q: texts[q] for q in ids}, {q: qrels[q] for q in ids}, len(missing)


def _natural(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


# ---------------------------------------------------------------------------------------------
# answer datasets


@dataclass(frozen=True, slots=True)
class GoldSpan:
    """Evidence for an answer: characters [start, end) of a passage's own text."""

    passage_id: str
    start: int
    end: int


@dataclass(frozen=True)
class AnswerExample:
    """One question with its gold answers and evidence; `answers` is empty when unanswerable."""

    id: str
    question: str
    answers: tuple[str, ...]
    is_impossible: bool
    evidence: tuple[GoldSpan, ...] = ()


@dataclass
class AnswerDataset:
    """Questions plus the passages they are answered from."""

    path: Path
    examples: list[AnswerExample]
    passages: dict[str, CorpusDoc]
    kind: str  # "squad" or "hotpotqa"
    passages_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.parent.name if self.path.name == "examples.jsonl" else self.path.stem

    def passages_sha256(self) -> str:
        digest = hashlib.sha256()
        for pid in sorted(self.passages):
            doc = self.passages[pid]
            digest.update(json.dumps([doc.id, doc.title, doc.text]).encode())
        return digest.hexdigest()

    def sample(self, *, limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[AnswerExample]:
        """The first `limit` examples, or a seeded random `sample` of them (in file order)."""
        chosen = self.examples
        if sample is not None and sample < len(chosen):
            picked = sorted(random.Random(seed).sample(range(len(chosen)), sample))
            chosen = [chosen[i] for i in picked]
        if limit is not None:
            chosen = chosen[:limit]
        return chosen


def _find_passages_file(path: Path) -> Path | None:
    for candidate in (path.parent / "beir" / "corpus.jsonl", path.parent / "corpus.jsonl"):
        if candidate.is_file():
            return candidate
    return None


def load_answer_dataset(path: str | Path, passages: str | Path | None = None) -> AnswerDataset:
    """SQuAD-style lines (question, answers, answer_starts, gold_passage_id, is_impossible) with a passage
    corpus, or HotpotQA-style lines (question, answer, context, supporting_facts) that carry their passages."""
    file = Path(path)
    if not file.is_file():
        raise EvaluationError(f"{file} is not a file", hint="--dataset takes a .jsonl file of questions")
    records = list(_jsonl(file))
    if not records:
        raise EvaluationError(f"{file} holds no question")
    if "context" in records[0][1] and "supporting_facts" in records[0][1]:
        return _hotpotqa(file, records)
    corpus_path = Path(passages) if passages else _find_passages_file(file)
    if corpus_path is None or not corpus_path.is_file():
        raise EvaluationError(
            f"no passages for {file}",
            hint="pass --passages CORPUS.jsonl (BEIR corpus with _id, title, text), or put beir/corpus.jsonl beside it",
        )
    docs: dict[str, CorpusDoc] = {}
    for line, record in _jsonl(corpus_path):
        doc_id = _require_str(record, ("_id", "id"), corpus_path, line)
        docs[doc_id] = CorpusDoc(doc_id, str(record.get("title") or ""), str(record.get("text") or ""))
    examples = []
    for line, record in records:
        qid = _require_str(record, ("id", "_id"), file, line)
        question = _require_str(record, ("question",), file, line)
        impossible = bool(record.get("is_impossible", False))
        answers = record.get("answers") or []
        starts = record.get("answer_starts") or []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise EvaluationError(f"{file}: line {line}: `answers` must be a list of strings")
        if not impossible and not answers:
            raise EvaluationError(f"{file}: line {line}: an answerable question needs `answers`")
        gold = record.get("gold_passage_id")
        evidence: list[GoldSpan] = []
        if not impossible and gold is not None:
            if gold not in docs:
                raise EvaluationError(f"{file}: line {line}: gold passage {gold!r} is not in {corpus_path}")
            text = docs[gold].text
            for answer, start in zip(answers, starts, strict=False):
                if isinstance(start, int) and text[start : start + len(answer)] == answer:
                    evidence.append(GoldSpan(gold, start, start + len(answer)))
        examples.append(
            AnswerExample(
                qid,
                question,
                tuple(dict.fromkeys(answers)) if not impossible else (),
                impossible,
                tuple(dict.fromkeys(evidence)),  # annotators often mark the same span
            )
        )
    return AnswerDataset(file, examples, docs, "squad", corpus_path)


def _hotpotqa(file: Path, records: list[tuple[int, dict[str, Any]]]) -> AnswerDataset:
    """Passages are the titled paragraphs of every example's context; evidence is the supporting sentences."""
    docs: dict[str, CorpusDoc] = {}
    offsets: dict[str, list[tuple[int, int]]] = {}
    examples = []
    for line, record in records:
        qid = _require_str(record, ("_id", "id"), file, line)
        question = _require_str(record, ("question",), file, line)
        context = record.get("context")
        if not isinstance(context, list):
            raise EvaluationError(f"{file}: line {line}: `context` must be a list of [title, sentences]")
        for item in context:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], list)):
                raise EvaluationError(f"{file}: line {line}: each context item must be [title, [sentences]]")
            title, sentences = str(item[0]), [str(s) for s in item[1]]
            if title in docs:
                continue
            spans, at = [], 0
            for sentence in sentences:
                spans.append((at, at + len(sentence)))
                at += len(sentence)
            docs[title] = CorpusDoc(title, title, "".join(sentences))
            offsets[title] = spans
        evidence = []
        for fact in record.get("supporting_facts") or []:
            if (
                isinstance(fact, list)
                and len(fact) == 2
                and fact[0] in offsets
                and 0 <= int(fact[1]) < len(offsets[fact[0]])
            ):
                start, end = offsets[fact[0]][int(fact[1])]
                evidence.append(GoldSpan(str(fact[0]), start, end))
        answer = record.get("answer")
        impossible = bool(record.get("is_impossible", False)) or answer in (None, "")
        examples.append(AnswerExample(qid, question, () if impossible else (str(answer),), impossible, tuple(evidence)))
    return AnswerDataset(file, examples, docs, "hotpotqa")
