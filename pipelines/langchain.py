"""LangChain interop: kag retrieval as a `BaseRetriever`, the answer pipeline as a `Runnable`.

Both open a data dir themselves (`from_data_dir`, `from_settings`), or take the pieces through their
constructors; `close()` (or a `with` block) releases what they opened, the data dir lock included.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, Field

from kag.errors import ConfigurationError, NotFoundError
from kag.ledger import Ledger
from kag.records import SearchHit
from kag.settings import Settings
from pipelines.answer import AnswerPipeline
from pipelines.retrieve import Retriever, hydrate

if TYPE_CHECKING:
    from kag.cli.runtime import Runtime

#: the retrieval modes of `KagRetriever.from_settings`, as `kag search --mode` names them
MODES = ("hybrid", "dense", "lexical", "graph")


def _open(settings: Settings | None, collections: Sequence[str]) -> Runtime:
    """The stores and models of the settings' data dir, checked to hold every collection asked for."""
    # the runtime assembles stores and models exactly as `kag search` / `kag ask` do; imported here so
    # that importing this module stays cheap and opens nothing
    from kag.cli.runtime import Runtime

    if isinstance(collections, str) or not collections:
        raise ConfigurationError(
            "collections must be a non-empty list of collection names", hint='e.g. collections=["hr"]'
        )
    runtime = Runtime(settings or Settings())
    try:
        known = set(runtime.stores.ledger.collections())
        missing = sorted(set(collections) - known)
        if missing:
            raise NotFoundError(
                f"no collection named {', '.join(missing)} in {runtime.settings.data_dir}",
                hint="ingest into it first (`kag ingest PATH --collection NAME`); "
                f"known: {', '.join(sorted(known)) or 'none'}",
            )
    except BaseException:
        runtime.close()
        raise
    return runtime


class _Closing:
    """`close()` and `with` support for what a `from_*` constructor opened (`_opened` returns and forgets it)."""

    def _opened(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release the stores and models opened by `from_settings` / `from_data_dir` (idempotent)."""
        owner = self._opened()
        if owner is not None:
            owner.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


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


class KagRetriever(_Closing, BaseRetriever):
    """kag retrieval (dense, lexical, graph or hybrid) restricted to a set of collections."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any  # pipelines.retrieve.Retriever (a Protocol, so not a pydantic type)
    ledger: Ledger
    collections: Sequence[str]
    k: int = 5
    owner: Any = Field(default=None, exclude=True, repr=False)  # what `from_settings` opened

    def _opened(self) -> Any:
        owner, self.owner = self.owner, None
        return owner

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, collections: Sequence[str], mode: str = "hybrid", k: int = 5
    ) -> KagRetriever:
        """Retrieval over the data dir of `settings` (default: the `KAG_*` environment, as the CLI reads it)."""
        if mode not in MODES:
            raise ConfigurationError(f"unknown retrieval mode {mode!r}", hint="one of: " + ", ".join(MODES))
        if k < 1:
            raise ConfigurationError(f"k must be at least 1, not {k}")
        runtime = _open(settings, collections)
        return cls(
            retriever=runtime.retriever(mode),
            ledger=runtime.stores.ledger,
            collections=list(collections),
            k=k,
            owner=runtime,
        )

    @classmethod
    def from_data_dir(
        cls,
        path: str | PathLike[str],
        *,
        collections: Sequence[str],
        mode: str = "hybrid",
        k: int = 5,
        **settings: Any,
    ) -> KagRetriever:
        """Retrieval over the data dir at `path` (what `kag ingest` wrote), other settings as keywords."""
        return cls.from_settings(Settings(data_dir=path, **settings), collections=collections, mode=mode, k=k)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        retriever: Retriever = self.retriever
        hits = hydrate(self.ledger, retriever.retrieve(query, self.k, list(self.collections)))
        return [to_document(h) for h in hits]


class KagAnswerRunnable(_Closing, Runnable[str | dict[str, Any], dict[str, Any]]):
    """The answer pipeline as a Runnable: input a question (or {"question", "collections", "policy"})."""

    def __init__(
        self,
        pipeline: AnswerPipeline,
        collections: Sequence[str],
        *,
        principal: str = "langchain",
        owner: Any = None,
    ) -> None:
        self.pipeline = pipeline
        self.collections = list(collections)
        self.principal = principal
        self._owner = owner

    def _opened(self) -> Any:
        owner, self._owner = self._owner, None
        return owner

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, collections: Sequence[str], principal: str = "langchain"
    ) -> KagAnswerRunnable:
        """Verified, cited, audited answers over the data dir of `settings` (default: the `KAG_*` environment);
        the LLM is `KAG_LLM_MODEL_PATH`, else the bundled one. Each answer is audited under `principal`."""
        runtime = _open(settings, collections)
        try:
            pipeline = runtime.answer_pipeline
        except BaseException:
            runtime.close()
            raise
        return cls(pipeline, collections, principal=principal, owner=runtime)

    @classmethod
    def from_data_dir(
        cls, path: str | PathLike[str], *, collections: Sequence[str], principal: str = "langchain", **settings: Any
    ) -> KagAnswerRunnable:
        """Answers over the data dir at `path` (what `kag ingest` wrote), other settings as keywords."""
        return cls.from_settings(Settings(data_dir=path, **settings), collections=collections, principal=principal)

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
