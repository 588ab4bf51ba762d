"""Request and response models of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kag.errors import InvalidRequestError
from kag.keys import ALL_COLLECTIONS, COLLECTION_NAME, Role

CollectionName = Field(pattern=COLLECTION_NAME.pattern, min_length=1, max_length=128)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- keys ---------------------------------------------------------------------------------


class KeyInfo(BaseModel):
    id: str
    name: str
    prefix: str
    role: Role
    collections: list[str]
    default_collection: str | None
    rate_limit_per_minute: int | None
    created_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    collections: list[str] = Field(
        min_length=1, max_length=1000, description=f"Collection names, or {ALL_COLLECTIONS!r}."
    )
    default_collection: str | None = Field(None, pattern=COLLECTION_NAME.pattern)
    rate_limit_per_minute: int | None = Field(None, ge=0, le=1_000_000)


class KeyCreated(KeyInfo):
    secret: str = Field(description="The key itself: shown once, only its hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyInfo]


# --- collections and documents --------------------------------------------------------------


class CollectionCreate(Strict):
    name: str = CollectionName
    description: str = Field("", max_length=2000)


class CollectionInfo(BaseModel):
    name: str
    description: str
    created_at: str | None
    documents: int
    chunks: int


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


SOURCE_URI_DOC = (
    "The source file: its path under the folder it was ingested from (with KAG_SOURCE_URI=absolute: the full "
    "path on the server)."
)


class DocumentInfo(BaseModel):
    id: str
    collection: str
    title: str
    version: int
    status: str
    mime_type: str
    source_uri: str = Field(description=SOURCE_URI_DOC)
    size_bytes: int
    sha256: str
    created_at: str | None
    updated_at: str | None
    metadata: dict[str, Any]


class DocumentList(BaseModel):
    documents: list[DocumentInfo]
    total: int
    limit: int
    offset: int


class ChunkInfo(BaseModel):
    id: str
    ordinal: int
    char_start: int
    char_end: int
    page: int | None
    heading_path: list[str]
    token_count: int
    text: str


class DocumentDetail(DocumentInfo):
    chunks: list[ChunkInfo]
    text: str | None = Field(None, description="The document's full text (with include_text=true).")


class DocumentText(BaseModel):
    document_id: str
    version: int
    length: int
    start: int
    end: int
    text: str


class FileErrorInfo(BaseModel):
    file: str
    code: str
    message: str


class JobInfo(BaseModel):
    id: str
    collection: str
    status: str
    queue_position: int | None
    files: list[str]
    files_total: int
    files_done: int
    progress: float
    documents_added: int
    documents_updated: int
    documents_unchanged: int
    documents_failed: int
    chunks_added: int
    stage: str = Field(description="queued, indexing (stage 1), graph (stage 2 of its documents runs) or done")
    graph_pending: int = Field(description="Documents of the job whose graph (stage 2) is still to be extracted.")
    graph_done: int = Field(description="Documents of the job whose graph is extracted.")
    graph_failed: int = Field(description="Documents of the job whose graph extraction failed.")
    started_at: str | None
    finished_at: str | None
    error: str | None
    errors: list[FileErrorInfo]


class JobList(BaseModel):
    jobs: list[JobInfo]


# --- retrieval and answers ------------------------------------------------------------------


class SearchMode(StrEnum):
    dense = "dense"
    lexical = "lexical"
    graph = "graph"
    hybrid = "hybrid"


class Filters(Strict):
    """Restrict retrieval to some documents (applied inside the stores, like the collection scope)."""

    document_ids: list[str] | None = Field(None, max_length=10_000)
    source_prefix: str | None = Field(
        None,
        max_length=4096,
        description="Documents whose source starts with this: the path as shown (under the folder it was "
        "ingested from) or the absolute path.",
    )
    since: datetime | None = Field(None, description="Documents updated at or after this time.")
    until: datetime | None = Field(None, description="Documents updated at or before this time.")

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a timezone, e.g. 2026-01-01T00:00:00Z")
        return value


class SearchRequest(Strict):
    query: str = Field(min_length=1, max_length=4000)
    collections: list[str] | None = Field(
        None, max_length=100, description="Default: the key's default collection, else all collections it may use."
    )
    mode: SearchMode = SearchMode.hybrid
    k: int = Field(10, ge=1, le=100)
    filters: Filters | None = None


class Hit(BaseModel):
    chunk_id: str
    score: float
    document_id: str
    collection: str
    title: str
    source_uri: str = Field(description=SOURCE_URI_DOC)
    page: int | None
    heading_path: list[str]
    char_start: int
    char_end: int
    text: str


class SearchResponse(BaseModel):
    query: str
    mode: SearchMode
    collections: list[str]
    results: list[Hit]
    took_ms: float


class Policy(StrEnum):
    flag = "flag"
    drop = "drop"
    extractive = "extractive"


class AskRequest(Strict):
    question: str = Field(min_length=1, max_length=4000)
    collections: list[str] | None = Field(
        None, max_length=100, description="Default: the key's default collection, else all collections it may use."
    )
    policy: Policy | None = Field(None, description="Unsupported sentences: flag, drop, or extractive (default).")
    filters: Filters | None = None
    stream: bool = Field(False, description="Answer as Server-Sent Events (also with `Accept: text/event-stream`).")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is blank")
        return value


class CitationOut(BaseModel):
    source: int
    document_id: str
    chunk_id: str
    title: str
    page: int | None = Field(description="The page the quote starts on (paged documents such as PDFs).")
    pages: list[int] | None = Field(
        None, description="[first, last] page of the quote (equal unless it runs across a page break)."
    )
    char_start: int
    char_end: int
    quote: str


class SentenceOut(BaseModel):
    text: str
    original: str
    supported: bool = Field(description="Whether the shown text is backed by the sources (a quote always is).")
    model_supported: bool = Field(
        False, description="Whether the sentence as the model wrote it is backed (false for a replaced one)."
    )
    label: str = Field("", description='What a reader is told, e.g. "replaced (model sentence unsupported)".')
    score: float
    action: str
    citations: list[CitationOut]


class SourceOut(BaseModel):
    number: int
    chunk_id: str
    score: float
    document_id: str
    collection: str
    title: str
    source_uri: str = Field(description=SOURCE_URI_DOC)
    page: int | None
    heading_path: list[str]
    char_start: int
    char_end: int


class AskResponse(BaseModel):
    question: str
    asked: str | None = Field(None, description="The question as asked, when a follow-up was rewritten.")
    collections: list[str]
    answer: str
    short_answer: str | None = Field(
        None, description="The phrase of the verified answer that answers the question (a name, number, yes/no)."
    )
    p_answerable: float | None = Field(
        None, description="The model's probability, read before it wrote anything, that the sources answer."
    )
    abstained: bool
    policy: str
    reason: str
    sentences: list[SentenceOut]
    citations: list[CitationOut]
    sources: list[SourceOut]
    audit_id: str
    timings_ms: dict[str, float]


# --- raw model access -----------------------------------------------------------------------


class EmbedRequest(Strict):
    texts: list[str] = Field(min_length=1, description="Texts to embed (at most KAG_API_EMBED_MAX_TEXTS).")

    @field_validator("texts")
    @classmethod
    def _short(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            if len(text) > 100_000:
                raise ValueError(f"texts[{i}] is over 100000 characters")
        return value


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]


class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str | list[str]
    model: str = "kag"
    encoding_format: Literal["float", "base64"] = "float"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequestError("only text content parts are supported", hint='use {"type": "text", ...}')
            parts.append(part["text"])
        return "\n".join(parts)


class GenerateRequest(Strict):
    prompt: str | None = Field(None, max_length=200_000, description="A raw prompt, sent to the model as is.")
    messages: list[ChatMessage] | None = Field(
        None, max_length=200, description="Chat messages, rendered with the model's chat template (instead of prompt)."
    )
    max_tokens: int = Field(128, ge=1, le=100_000)
    temperature: float = Field(0.0, ge=0, le=5)
    top_k: int = Field(40, ge=0, le=1000)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = Field(42, ge=0, le=0xFFFFFFFE)
    stream: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    text: str
    finish_reason: str
    usage: Usage
    model: dict[str, str]
    sampling: dict[str, Any]
    took_ms: float


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; kag answers the last user message from the knowledge base."""

    model_config = ConfigDict(extra="allow")
    model: str = Field("kag", max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    collection: str | None = Field(None, pattern=COLLECTION_NAME.pattern, description="kag: collection to answer from.")
    collections: list[str] | None = Field(None, max_length=100, description="kag: collections to answer from.")
    policy: Policy | None = None


# --- audit ------------------------------------------------------------------------------------


class AuditSummary(BaseModel):
    id: str
    seq: int
    created_at: str
    principal: str
    principal_name: str | None = Field(None, description="The name of the API key that asked, if it is one.")
    collections: list[str]
    question: str
    answer: str
    abstained: bool
    sentences: int
    supported: int = Field(description="Model sentences backed by the sources as written.")
    unsupported: int = Field(description="Model sentences not backed as written (replaced ones included).")
    replaced: int = Field(0, description="Unsupported model sentences the extractive policy replaced by a quote.")
    citations: int
    intact: bool = Field(True, description="Whether the record's hash covers its payload and its columns agree.")
    error: str | None = Field(None, description="Why the record is not intact, e.g. `unreadable payload`.")


class AuditList(BaseModel):
    records: list[AuditSummary]
    limit: int
    offset: int
    hidden: int = Field(0, description="Records on this page left out because they span collections outside the key.")


class AuditRecord(BaseModel):
    id: str
    seq: int
    created_at: str
    principal: str
    principal_name: str | None = Field(None, description="The name of the API key that asked, if it is one.")
    collections: list[str]
    question: str
    prev_hash: str
    hash: str
    intact: bool = Field(
        description="Whether this record's hash still matches its content and its columns agree with it; "
        "principal, collections and question are always read from the hashed payload."
    )
    error: str | None = Field(None, description="Why the record is not intact.")
    body: dict[str, Any]


class ChainStatus(BaseModel):
    ok: bool
    checked: int
    head_seq: int | None
    head_hash: str
    broken: dict[str, Any] | None
    checkpoints: int = Field(0, description="Signed checkpoints compared with the chain (KAG_AUDIT_CHECKPOINT_PATH).")


class AuditHeadStatus(BaseModel):
    count: int = Field(description="Records in the ledger now.")
    head_seq: int | None
    head_id: str | None
    head_hash: str = Field(description="The newest record's hash: keep it elsewhere and compare it later.")
