"""TREC run and qrels files, so trec_eval, ranx or pytrec_eval can re-score what `kag eval retrieval` ran.

A run line is `qid Q0 docid rank score tag`; a qrels line is `qid 0 docid relevance`. The score column
is the score kag evaluated (1/rank of the document ranking), so every tool ranks the documents exactly
as kag did, ties included. The format splits on whitespace, so whitespace and `%` inside an id are
percent-encoded (`doc 6` -> `doc%206`), the same way in both files."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_UNSAFE = re.compile(r"[\s%]")
_FILE_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def trec_id(value: str) -> str:
    """An id as one whitespace-free token: `%` and whitespace percent-encoded."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def run_file_name(setup: str) -> str:
    """A file name for a setup's run (`hybrid:llm` -> `hybrid-llm.trec`)."""
    return (_FILE_UNSAFE.sub("-", setup).strip("-") or "run") + ".trec"


def write_run(path: Path, run: Mapping[str, Mapping[str, float]], tag: str) -> int:
    """Write one run, queries in the given order, documents by descending score; returns the line count."""
    tag = trec_id(tag) or "kag"
    lines = []
    for qid, scores in run.items():
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        for rank, (doc, score) in enumerate(ranked, start=1):
            lines.append(f"{trec_id(qid)} Q0 {trec_id(doc)} {rank} {float(score)!r} {tag}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def write_qrels(path: Path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """The judgments the run was scored against, in TREC qrels layout."""
    lines = [f"{trec_id(q)} 0 {trec_id(d)} {rel}\n" for q, docs in qrels.items() for d, rel in docs.items()]
    path.write_text("".join(lines), encoding="utf-8")
