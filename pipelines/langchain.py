"""LangChain interop: kag retrieval as a `BaseRetriever`, the answer pipeline as a `Runnable`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict

from kag.ledger import Ledger
from kag.records import SearchHit
from pipelines.answer import AnswerPipeline
from pipelines.retrieve import Retriever, hydrate


def to_document(hit: SearchHit) -> Document:
    """A LangChain Document whose metadata says exactly where the text came from."""
    return Document(
        page_content=hit.text,
        id=hit.chunk_id,
        metadata={
            "chunk_id": hit.chunk_id,
            "document_id": hit.document_id,
            "collection": hit.collection,
            "title": hit.title,
            "source": hit.source_uri,
            "page": hit.page,
            "heading_path": list(hit.heading_path),
            "char_start": hit.char_start,
            "char_end": hit.char_end,
            "score": hit.score,
        },
    )


class KagRetriever(BaseRetriever):
    """kag retrieval (dense, lexical, graph or hybrid) restricted to a set of collections."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # pipelines.retrieve.Retriever (a Protocol, so not a pydantic type)
    ledger: Ledger
    collections: Sequence[str]
    k: int = 5

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        retriever: Retriever = self.retriever
        hits = hydrate(self.ledger, retriever.retrieve(query, self.k, list(self.collections)))
        return [to_document(h) for h in hits]


class KagAnswerRunnable(Runnable[str | dict[str, Any], dict[str, Any]]):
    """The answer pipeline as a Runnable: input a question (or {"question", "collections", "policy"})."""

    def __init__(self, pipeline: AnswerPipeline, collections: Sequence[str], *, principal: str = "langchain") -> None:
        self.pipeline = pipeline
        self.collections = list(collections)
        self.principal = principal

    def _args(self, value: str | dict[str, Any]) -> tuple[str, list[str], str | None]:
        if isinstance(value, str):
            return value, self.collections, None
        return value["question"], list(value.get("collections") or self.collections), value.get("policy")

    def invoke(
        self, input: str | dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        question, collections, policy = self._args(input)
        result = self.pipeline.answer(question, collections, principal=self.principal, policy=policy)
        return result.to_dict()

    def stream(
        self, input: str | dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Yields {"token": piece} while generating, then the verified answer dict."""
        question, collections, policy = self._args(input)
        for event, value in self.pipeline.stream(question, collections, principal=self.principal, policy=policy):
            yield {"token": value} if event == "token" else value.to_dict()
