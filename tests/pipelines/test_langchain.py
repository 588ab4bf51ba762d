"""LangChain interop: KagRetriever and the answer pipeline as a Runnable, composed with LCEL."""

from __future__ import annotations

from typing import Any

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
