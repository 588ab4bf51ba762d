"""Assemble the object graph from settings: the only place the CLI builds stores and models."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from kag.errors import ConfigurationError
from kag.settings import Settings
from kag.stores.bundle import Stores, open_stores

if TYPE_CHECKING:
    from ingest.executors import Executor, PrepareSpec
    from ingest.graph import SpacyGraphExtractor
    from ingest.pipeline import Ingestor
    from kag.audit import AuditLog
    from kag.audit_checkpoints import CheckpointFile
    from kag.ledger import Ledger
    from kag.models.embedder import Embedder, SentenceTransformerEmbedder
    from kag.models.llm_cache import ModelCache
    from kag.stores.graph import GraphCache
    from pipelines.answer import AnswerPipeline
    from pipelines.answerability import AnswerabilityModel
    from pipelines.generate import LlamaGenerator, LLMGraphExtractor, SamplingParams
    from pipelines.retrieve import Retriever
    from pipelines.verify import Verifier

SCHEMA_VERSION = 1


def checkpoint_file(settings: Settings, path: Path | None = None) -> CheckpointFile | None:
    """The audit checkpoint file at `path` (else KAG_AUDIT_CHECKPOINT_PATH), or None when neither is set."""
    from kag.audit_checkpoints import CheckpointFile

    path = path or settings.audit_checkpoint_path
    if path is None:
        return None
    if settings.audit_hmac_key is None:
        raise ConfigurationError(
            f"audit checkpoints at {path} need KAG_AUDIT_HMAC_KEY, the secret that signs them",
            hint="set KAG_AUDIT_HMAC_KEY to a long random secret, e.g. `openssl rand -hex 32`",
        )
    return CheckpointFile(path, settings.audit_hmac_key.get_secret_value().encode("utf-8"))


def audit_log(settings: Settings, ledger: Ledger) -> AuditLog:
    """The audit log over `ledger`, writing signed checkpoints when the settings configure them."""
    from kag.audit import AuditLog

    return AuditLog(ledger, checkpoints=checkpoint_file(settings), checkpoint_every=settings.audit_checkpoint_every)


class Runtime:
    """Lazily built collaborators for one CLI invocation or one API process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stores: Stores | None = None
        self._executors: dict[str, Executor] = {}

    @cached_property
    def embedder(self) -> SentenceTransformerEmbedder:
        from kag.models.embedder import SentenceTransformerEmbedder

        s = self.settings
        embedder = SentenceTransformerEmbedder(
            s.embedding_model_path,
            device=s.embedding_device,
            batch_size=s.embedding_batch_size,
            runtime=s.embedding_runtime,
            onnx_cache_dir=s.embedding_onnx_cache_dir,
            onnx_threads=s.embedding_onnx_threads,
            bulk_runtime=s.embedding_bulk_runtime,
            bulk_threads=s.embedding_bulk_threads,
        )
        embedder.warm_up()
        return embedder

    @cached_property
    def name_embedder(self) -> Embedder:
        """What embeds entity names (`KAG_GRAPH_NAME_EMBEDDER`): the distilled static table or the embedder."""
        if self.settings.graph_name_embedder == "model":
            return self.embedder
        from kag.models.static_embedder import StaticEmbedder

        static = StaticEmbedder(self.settings.embedding_model_path, cache_dir=self.settings.graph_name_cache_dir)
        static.warm_up()
        return static

    @property
    def stores(self) -> Stores:
        if self._stores is None:
            s = self.settings
            self._stores = open_stores(
                data_dir=s.data_dir,
                database_url=s.resolved_database_url,
                dim=self.embedder.dim,
                qdrant_url=s.qdrant_url,
                qdrant_api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
                qdrant_collection=s.qdrant_collection,
                lexical_backend=s.lexical_backend,
                qdrant_lexical_collection=s.qdrant_lexical_collection,
                lexical_avg_doc_tokens=s.lexical_avg_doc_tokens,
                lexical_title_boost=s.lexical_title_boost,
                grade_floors=s.graph_grade_floors,
            )
        return self._stores

    @cached_property
    def query_extractor(self) -> SpacyGraphExtractor:
        """spaCy entities of queries: fast enough per request whatever extracts the graph at ingestion."""
        from ingest.graph import SpacyGraphExtractor

        extractor = SpacyGraphExtractor(self.settings.spacy_model)
        extractor.warm_up()
        return extractor

    @cached_property
    def extractor(self) -> SpacyGraphExtractor | LLMGraphExtractor:
        """The graph extractor used at ingestion: `KAG_GRAPH_EXTRACTOR`."""
        if self.settings.graph_extractor == "llm":
            from pipelines.generate import LLMGraphExtractor

            return LLMGraphExtractor(self.generator)
        return self.query_extractor

    @property
    def fingerprint(self) -> str:
        s = self.settings
        # the extractor is named only when it is not the original spaCy one, so existing indexes keep
        # their fingerprint (and `kag doctor` / eval workspaces do not ask for a needless re-ingest)
        extractor = f"/{s.graph_extractor}" if s.graph_extractor != "spacy" else ""
        return (
            f"schema={SCHEMA_VERSION};embedder={self.embedder.name};chunk={s.chunk_size}/{s.chunk_overlap};"
            f"graph={int(s.graph_enabled)}{extractor};json={s.json_text_field}/{s.json_title_field}"
            + (";embed_title=1" if s.embed_title else "")
        )

    @cached_property
    def ingestor(self) -> Ingestor:
        from ingest.chunking import Chunker, HFTokenizer
        from ingest.pipeline import Ingestor

        s = self.settings
        return Ingestor(
            self.stores,
            self.embedder,
            Chunker(HFTokenizer(self.embedder.model_path), s.chunk_size, s.chunk_overlap),
            self.prepare_spec.build_registry(),
            extractor=self.extractor if s.graph_enabled else None,
            max_file_bytes=s.max_file_bytes,
            max_document_chars=s.max_document_chars,
            batch_chunks=s.index_batch_size,
            fingerprint=self.fingerprint,
            executor=self.executor,
            embed_title=s.embed_title,
            stale_job_seconds=s.job_stale_seconds,
            name_embedder=self.name_embedder if s.graph_enabled else None,
        )

    @cached_property
    def prepare_spec(self) -> PrepareSpec:
        """The ingestion components as plain values, for executors that build them on other machines."""
        from ingest.executors import PrepareSpec

        return PrepareSpec.from_settings(self.settings, self.fingerprint)

    @property
    def executor(self) -> Executor:
        """The executor KAG_INGEST_EXECUTOR names; API jobs may ask for another with `executor_for`."""
        return self.executor_for(self.settings.ingest_executor)

    def executor_for(self, name: str) -> Executor:
        """An executor by name (`local`, `ray`), built once per runtime and closed with it.

        An API job runner passes it per job: `rt.ingestor.ingest(paths, c, executor=rt.executor_for("ray"))`."""
        from ingest.executors import make_executor

        if name not in self._executors:
            self._executors[name] = make_executor(self.settings, self.prepare_spec, name)
        return self._executors[name]

    @cached_property
    def graph_cache(self) -> GraphCache:
        """Per-collection graphs shared by every retriever, within the memory cap, refreshed from the ledger."""
        from kag.stores.graph import GraphCache

        s = self.settings
        return GraphCache(
            self.stores.ledger, max_elements=s.graph_cache_max_elements, check_seconds=s.graph_cache_check_seconds
        )

    def retriever(self, mode: str) -> Retriever:
        from pipelines.retrieve import DenseRetriever, GraphRetriever, HybridRetriever, LexicalRetriever

        s = self.settings
        stores = self.stores
        dense = DenseRetriever(self.embedder, stores.vectors)
        lexical = LexicalRetriever(stores.fulltext)
        if mode == "dense":
            return dense
        if mode == "lexical":
            return lexical
        graph = GraphRetriever(
            self.query_extractor,
            self.graph_cache,
            hops=s.graph_hops,
            embedder=self.name_embedder,
            link_threshold=s.graph_link_threshold,
        )
        if mode == "graph":
            return graph
        return HybridRetriever(
            {"dense": dense, "lexical": lexical, "graph": graph},
            weights={"dense": s.weight_dense, "lexical": s.weight_lexical, "graph": s.weight_graph},
            depth=s.retrieval_depth,
            rrf_k=s.rrf_k,
            fusion=s.fusion,
            document_weight=s.fusion_document_weight,
            feedback_chunks=s.dense_feedback_chunks,
            feedback_weight=s.dense_feedback_weight,
            depths={
                name: d
                for name, d in (("dense", s.depth_dense), ("lexical", s.depth_lexical), ("graph", s.depth_graph))
                if d is not None
            },
        )

    @cached_property
    def sampling(self) -> SamplingParams:
        from pipelines.generate import ANSWER_STOP, SamplingParams

        s = self.settings
        return SamplingParams(
            temperature=s.llm_temperature,
            top_k=s.llm_top_k,
            top_p=s.llm_top_p,
            seed=s.llm_seed,
            max_tokens=s.llm_max_tokens,
            stop=ANSWER_STOP,
        )

    @cached_property
    def model_cache(self) -> ModelCache:
        from kag.models.llm_cache import ModelCache

        return ModelCache(self.settings.model_cache_dir)

    @cached_property
    def llm_model_path(self) -> str:
        """The GGUF file KAG_LLM_MODEL names: a catalog model (joined and verified on first use) or a path."""
        from kag.models.llm_cache import resolve_llm_model

        return resolve_llm_model(self.settings.llm_model_spec, self.model_cache)

    @cached_property
    def generator(self) -> LlamaGenerator:
        from pipelines.generate import LlamaGenerator

        s = self.settings
        generator = LlamaGenerator(
            self.llm_model_path,
            n_ctx=s.llm_n_ctx,
            n_threads=s.llm_threads,
            n_gpu_layers=s.llm_n_gpu_layers,
            sampling=self.sampling,
        )
        generator.warm_up()
        return generator

    def verifier(self, policy: str) -> Verifier:
        from pipelines.verify import Verifier

        s = self.settings
        return Verifier(
            self.embedder,
            policy=policy,
            support_threshold=s.support_threshold,
            abstain_threshold=s.abstain_threshold,
            novel_allowance=s.verify_novel_words,
            replace_min_score=s.verify_replace_min_score,
            min_grounding=s.verify_min_grounding,
            require_question_terms=s.verify_question_terms,
        )

    def min_answerable(self) -> float:
        """`KAG_ANSWER_MIN_ANSWERABLE`, else the threshold tuned for the loaded model's weights."""
        from pipelines.generate import tuned_min_answerable

        s = self.settings
        if s.answer_min_answerable is not None:
            return s.answer_min_answerable
        return tuned_min_answerable(self.generator.model_sha256)

    def answerability(self) -> AnswerabilityModel | None:
        """The answerability model fitted for the loaded model's weights, with `KAG_ANSWER_MIN_EVIDENCE` as
        its threshold when set (0: no decision); None where no model was fitted for these weights."""
        from pipelines.answerability import tuned_answerability

        model = tuned_answerability(self.generator.model_sha256)
        threshold = self.settings.answer_min_evidence
        if model is None or threshold is None:
            return model
        return dataclasses.replace(model, threshold=threshold)

    def _chat_yes_probability(self, message: str) -> float:
        generator = self.generator
        return generator.yes_probability(generator.render_chat([{"role": "user", "content": message}]))

    @cached_property
    def audit(self) -> AuditLog:
        """The one audit log of this runtime: the answer pipeline writes it, the API reads it."""
        return audit_log(self.settings, self.stores.ledger)

    @cached_property
    def answer_pipeline(self) -> AnswerPipeline:
        from pipelines.answer import AnswerPipeline
        from pipelines.generate import prompt_profile
        from pipelines.rerank import RerankStage, make_reranker
        from pipelines.retrieve import HybridRetriever

        s = self.settings
        retriever = self.retriever("hybrid")
        assert isinstance(retriever, HybridRetriever)
        reranker = make_reranker(
            s.rerank,
            model_path=s.rerank_model_path,
            yes_probability=self._chat_yes_probability if s.rerank == "llm" else None,
        )
        return AnswerPipeline(
            ledger=self.stores.ledger,
            retriever=retriever,
            rerank=RerankStage(reranker, self.embedder, mmr_lambda=s.mmr_lambda, vectors=self.stores.vectors),
            generator=self.generator,
            verifiers=self.verifier,
            audit=self.audit,
            sampling=self.sampling,
            rerank_depth=s.rerank_depth,
            context_chunks=s.context_chunks,
            default_policy=s.verify_policy,
            answerable_threshold=self.min_answerable(),
            answerability=self.answerability(),
            short_answers=s.answer_short,
            multihop=s.answer_multihop,
            profile=prompt_profile(self.generator.model_sha256),
            absolute_sources=s.source_uri == "absolute",
        )

    def close(self) -> None:
        """Free models and release the stores (and the data dir lock); safe to call twice."""
        for name in ("generator", "name_embedder", "embedder"):
            model = self.__dict__.pop(name, None)  # only what was built: cached_property stores it here
            if model is not None:
                model.close()
        self.__dict__.pop("answer_pipeline", None)
        self.__dict__.pop("audit", None)
        executors, self._executors = self._executors, {}
        for executor in executors.values():
            executor.close()
        if self._stores is not None:
            self._stores.close()
            self._stores = None
