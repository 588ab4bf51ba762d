"""LangChain interop: KagRetriever and the answer pipeline as a Runnable, composed with LCEL."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from kag.audit import AuditLog
from pipelines.langchain import KagAnswerRunnable, KagRetriever

QUESTION = "How much is the weekly on-call stipend for a primary on-call engineer?"


def test_retriever_returns_documents_with_exact_provenance(demo_runtime: Any) -> None:
    retriever = KagRetriever(
        retriever=demo_runtime.retriever("hybrid"), ledger=demo_runtime.stores.ledger, collections=["demo"], k=4
    )
    docs = retriever.invoke(QUESTION)
    assert 1 <= len(docs) <= 4 and all(isinstance(d, Document) for d in docs)
    for doc in docs:
        meta = doc.metadata
        assert meta["collection"] == "demo" and meta["chunk_id"] == doc.id
        text = demo_runtime.stores.ledger.get_document(meta["document_id"]).text
        assert text[meta["char_start"] : meta["char_end"]] == doc.page_content
    assert any("on-call" in d.metadata["source"] for d in docs)
    # it composes like any retriever
    chain = retriever | RunnableLambda(lambda found: [d.metadata["title"] for d in found])
    assert chain.invoke(QUESTION) == [d.metadata["title"] for d in docs]


def test_retriever_respects_its_collections(demo_runtime: Any) -> None:
    retriever = KagRetriever(
        retriever=demo_runtime.retriever("hybrid"), ledger=demo_runtime.stores.ledger, collections=["public"], k=10
    )
    assert {d.metadata["collection"] for d in retriever.invoke("Osprey API rate limit")} <= {"public"}


def test_answer_runnable_invoke_stream_and_batch(demo_runtime: Any) -> None:
    runnable = KagAnswerRunnable(demo_runtime.answer_pipeline, ["demo"], principal="lc-test")
    result = runnable.invoke(QUESTION)
    assert result["question"] == QUESTION and result["audit_id"] and result["collections"] == ["demo"]
    assert AuditLog(demo_runtime.stores.ledger).get(result["audit_id"]).principal == "lc-test"

    events = list(runnable.stream({"question": QUESTION, "policy": "flag"}))
    tokens = [e["token"] for e in events if "token" in e]
    final = events[-1]
    assert "token" not in final and final["policy"] == "flag" and tokens
    assert all("token" in e for e in events[:-1])

    both = runnable.batch([QUESTION, {"question": QUESTION, "collections": ["public"]}])
    assert both[0]["collections"] == ["demo"] and both[1]["collections"] == ["public"]
    # greedy decoding over the same sources: the same question gives the same answer
    assert both[0]["answer"] == result["answer"]


ROOT = Path(__file__).resolve().parents[2]
README_MARKER = "<!-- tests/pipelines/test_langchain.py runs this block"


def readme_langchain_example() -> str:
    """The python block that follows the marker in README.md (read at run time: README changes)."""
    text = (ROOT / "README.md").read_text()
    assert README_MARKER in text, "README.md lost its LangChain example"
    block = re.search(r"```python\n(.*?)```", text[text.index(README_MARKER) :], re.DOTALL)
    assert block is not None
    return block.group(1)


@pytest.mark.slow
def test_readme_langchain_example_runs_on_an_ingested_data_dir(
    tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kag.cli.runtime import Runtime
    from kag.settings import Settings

    corpus = tmp_path / "handbook"
    corpus.mkdir()
    for name in ("paid-time-off.md", "welcome.md"):
        shutil.copy(ROOT / "data" / "handbook" / name, corpus / name)
    monkeypatch.chdir(tmp_path)
    runtime = Runtime(Settings(data_dir=tmp_path / ".kag"))
    runtime.__dict__["embedder"] = embedder
    try:
        assert runtime.ingestor.ingest([corpus], "demo").status == "completed"
    finally:
        runtime.close()

    exec(compile(readme_langchain_example(), "README.md", "exec"), {"__name__": "readme"})
    titles, answer = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "Paid Time Off and Leave" in titles, titles
    assert " a_" in answer or answer.split()[-1].startswith("a_"), answer
    # both closed what they opened: the data dir is free again
    with KagRetriever.from_data_dir(tmp_path / ".kag", collections=["demo"], mode="lexical") as again:
        assert again.invoke("PTO")


def test_public_constructors_refuse_bad_arguments_clearly(tmp_path: Path) -> None:
    from kag.errors import ConfigurationError, NotFoundError

    with pytest.raises(NotFoundError, match="no collection named nope") as missing:
        KagRetriever.from_data_dir(tmp_path / ".kag", collections=["nope"])
    assert "kag ingest" in (missing.value.hint or "")
    with pytest.raises(ConfigurationError, match="unknown retrieval mode 'fuzzy'"):
        KagRetriever.from_data_dir(tmp_path / ".kag", collections=["x"], mode="fuzzy")
    with pytest.raises(ConfigurationError, match="non-empty list"):
        KagAnswerRunnable.from_data_dir(tmp_path / ".kag", collections="demo")  # type: ignore[arg-type]
    # a refused open leaves the data dir unlocked
    with pytest.raises(NotFoundError):
        KagAnswerRunnable.from_data_dir(tmp_path / ".kag", collections=["nope"])
