"""`kag eval`: retrieval evaluation on BEIR folders, answer evaluation on SQuAD/HotpotQA-style files,
and the fusion-parameter sweep used to tune the shipped defaults."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kag.errors import EvaluationError
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.cli.runtime import Runtime
    from pipelines.evaluation.datasets import CorpusDoc
    from pipelines.evaluation.workspace import EvalWorkspace

eval_app = typer.Typer(
    name="eval",
    help="Evaluate retrieval (BEIR folders) and answers (SQuAD/HotpotQA-style JSONL); tune fusion settings.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)


class StatTest(StrEnum):
    student = "student"
    fisher = "fisher"


def _handle(func: Callable[..., Any]) -> Callable[..., Any]:
    from kag.cli import handle_errors

    return handle_errors(func)


def show_progress(flag: bool | None) -> bool:
    """--progress / --no-progress, else a bar only when stderr is a terminal."""
    return err.is_terminal if flag is None else flag


def _progress(label: str, enabled: bool | None = None) -> Progress:
    return Progress(
        TextColumn(f"[bold]{escape(label)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show_progress(enabled),
    )


def eval_settings(base: Settings) -> Settings:
    """The caller's settings with embedded stores and the JSON fields evaluation corpora use."""
    return base.model_copy(
        update={
            "database_url": None,
            "qdrant_url": None,
            "qdrant_api_key": None,
            "json_text_field": "text",
            "json_title_field": "title",
        }
    )


def graph_variants(rt: Runtime, hops: Iterable[int]) -> dict[str, str]:
    """Ranking-cache tags of the graph retrievers: what their rankings depend on besides the index."""
    s = rt.settings
    tag = f"@{s.graph_name_embedder}@link{s.graph_link_threshold:g}"
    return {f"graph@{h}": tag for h in hops}


def open_workspace(
    settings: Settings,
    work_dir: Path,
    dataset_name: str,
    corpus_sha256: str,
    docs: Callable[[], Iterable[CorpusDoc]],
    *,
    quiet: bool = False,
    progress: bool | None = None,
) -> tuple[Runtime, EvalWorkspace]:
    """A runtime on the cached evaluation data dir of this corpus and these index settings; the corpus
    is ingested through the real Ingestor the first time only."""
    from kag.cli.progress import IngestProgress
    from kag.cli.runtime import Runtime
    from pipelines.evaluation.workspace import COLLECTION, EvalWorkspace

    rt = Runtime(eval_settings(settings))
    workspace = EvalWorkspace.for_corpus(work_dir, dataset_name, corpus_sha256, rt.fingerprint)
    # stores open lazily, so the data dir can still move into the workspace
    rt.settings = rt.settings.model_copy(update={"data_dir": workspace.data_dir})
    if workspace.complete:
        if not quiet:
            err.print(f"[dim]reusing the index in {workspace.root}[/]", highlight=False)
        if rt.settings.graph_enabled:
            from kag.stores.graph import embed_entity_names

            # names stored by another name embedder (KAG_GRAPH_NAME_EMBEDDER changed) are embedded again
            embed_entity_names(rt.stores.ledger, rt.name_embedder, COLLECTION)
        return rt, workspace
    try:
        written = workspace.write_corpus(docs())
        err.print(
            f"ingesting {written['documents']} documents into {workspace.root} (once per corpus and index settings)",
            highlight=False,
        )
        with IngestProgress(err, enabled=show_progress(progress)) as listener:
            report = rt.ingestor.ingest([workspace.corpus_dir], COLLECTION, sync=True, listener=listener)
        if report.status != "completed":
            raise EvaluationError(
                f"ingesting the evaluation corpus ended {report.status}: "
                + "; ".join(f"{e.path}: {e.message}" for e in report.errors[:3]),
                hint=f"see `KAG_DATA_DIR={workspace.data_dir} kag jobs {report.job_id}`",
            )
        workspace.mark_complete(
            ingest={
                "seconds": round(report.seconds, 1),
                "documents": report.documents_added + report.documents_updated + report.documents_unchanged,
                "failed": report.documents_failed,
                "chunks": len(rt.stores.ledger.chunk_ids(COLLECTION)),
                "failures": [f"{e.path}: {e.message}" for e in report.errors[:20]],
            }
        )
        err.print(
            f"ingested in {report.seconds:.0f}s: {report.documents_added} documents, {report.chunks_added} chunks, "
            f"{report.documents_failed} failed",
            highlight=False,
        )
    except BaseException:
        rt.close()
        raise
    return rt, workspace


DatasetOpt = Annotated[Path, typer.Option("--dataset", "-d", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")]
WorkDirOpt = Annotated[
    Path | None,
    typer.Option(help="Where evaluation indexes are cached (default: ~/.cache/kag/eval); reruns reuse them."),
]
SplitOpt = Annotated[str, typer.Option(help="Qrels split: qrels/<split>.tsv.")]
LimitOpt = Annotated[int | None, typer.Option("--limit-queries", min=1, help="Evaluate the first N judged queries.")]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Output folder (default eval-results/DATASET-SPLIT, -tune for tune, DATASET-answers for answers)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the JSON report to stdout.")]
ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress", help="Draw progress bars on stderr (default: only when stderr is a terminal)."
    ),
]


@eval_app.command("retrieval")
def retrieval_command(
    dataset: DatasetOpt,
    split: SplitOpt = "test",
    setups: Annotated[
        list[str] | None,
        typer.Option(
            help="Setups to run (comma-separated or repeated): lexical, dense, graph, hybrid, hybrid+graph, default, "
            "bm25-okapi; add :llm, :cross-encoder or :none for a reranker (e.g. hybrid:llm)."
        ),
    ] = None,
    baseline: Annotated[str | None, typer.Option(help="Setup the significance tests compare against.")] = None,
    limit_queries: LimitOpt = None,
    depth: Annotated[
        int | None,
        typer.Option(
            min=1, help="Chunks each kag setup returns (default KAG_RETRIEVAL_DEPTH); documents for bm25-okapi."
        ),
    ] = None,
    stat_test: Annotated[StatTest, typer.Option(help="Paired test: student (t-test) or fisher (randomization).")] = (
        StatTest.student
    ),
    alpha: Annotated[float, typer.Option(min=0, max=1, help="Significance level marked in the table.")] = 0.05,
    out_dir: OutOpt = None,
    work_dir: WorkDirOpt = None,
    progress: ProgressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval metrics (nDCG@10, R@10, R@100, MRR@10, MAP), latency and significance per setup.

    Each setup's ranking is also written as a TREC run file (OUT/runs/SETUP.trec) beside the judgments
    it was scored against (OUT/runs/qrels.txt), for trec_eval, ranx or pytrec_eval."""
    _handle(_retrieval)(**locals())


def _retrieval(
    dataset: Path,
    split: str,
    setups: list[str] | None,
    baseline: str | None,
    limit_queries: int | None,
    depth: int | None,
    stat_test: StatTest,
    alpha: float,
    out_dir: Path | None,
    work_dir: Path | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    import json

    from pipelines.evaluation import report as reporting
    from pipelines.evaluation import trec
    from pipelines.evaluation.datasets import BeirDataset, evaluation_queries
    from pipelines.evaluation.metrics import RETRIEVAL_METRICS, compare_runs, evaluate_run
    from pipelines.evaluation.retrieval import run_setup
    from pipelines.evaluation.setups import STANDARD_SETUPS, parse_setups
    from pipelines.evaluation.workspace import default_work_dir

    settings = Settings()
    # every input is checked before anything slow starts
    data = BeirDataset.open(dataset)
    queries, qrels, unjudged = evaluation_queries(data, split, limit=limit_queries)
    specs = parse_setups(setups or list(STANDARD_SETUPS))
    corpus = list(data.corpus())  # read (and checked) before anything slow starts
    names = [s.name for s in specs]
    baseline = baseline or names[0]
    if baseline not in names:
        raise EvaluationError(f"baseline {baseline!r} is not one of the setups run", hint=f"setups: {', '.join(names)}")
    _check_rerankers(specs, settings)
    depth = depth or settings.retrieval_depth
    out_path = reporting.prepare_out_dir(out_dir or Path("eval-results") / f"{data.name}-{split}")

    rt, workspace = open_workspace(
        settings, work_dir or default_work_dir(), data.name, data.corpus_sha256(), lambda: corpus, progress=progress
    )
    try:
        builder = SetupBuilder(rt, workspace, depth=depth, corpus=lambda: corpus)
        results = []
        for spec in specs:
            ranker, params = builder.build(spec)
            with _progress(spec.name, progress) as bar:
                task = bar.add_task(spec.name, total=len(queries))
                results.append(
                    run_setup(spec.name, ranker, queries, params=params, on_query=functools.partial(bar.advance, task))
                )
    finally:
        rt.close()

    metrics = list(RETRIEVAL_METRICS)
    runs_dir = reporting.prepare_out_dir(out_path / "runs")
    trec.write_qrels(runs_dir / "qrels.txt", qrels)
    rows = []
    for result in results:
        means, per_query = evaluate_run(qrels, result.run, metrics, name=result.name)
        run_file = runs_dir / trec.run_file_name(result.name)
        trec.write_run(run_file, result.run, tag=result.name)
        rows.append(
            {
                "name": result.name,
                "description": result.params.pop("description", ""),
                "run_file": str(run_file.relative_to(out_path)),
                "params": result.params,
                "metrics": means,
                "latency_ms": result.latency_ms(),
                "per_query": {
                    q: {
                        **{m: round(per_query[m].get(q, 0.0), 4) for m in metrics},
                        "latency_ms": round(result.latencies[q] * 1000, 2),
                        "top10": result.rankings[q][:10],
                    }
                    for q in queries
                },
            }
        )
    p_values = compare_runs(qrels, {r.name: r.run for r in results}, baseline, metrics, stat_test=stat_test.value)
    for row in rows:
        row["p_values"] = p_values.get(row["name"], {})
    report = {
        "dataset": data.name,
        "split": split,
        "queries": len(queries),
        "judged_queries_without_text": unjudged,
        "metrics": metrics,
        "baseline": baseline,
        "stat_test": stat_test.value,
        "alpha": alpha,
        "depth": depth,
        "index": {"path": str(workspace.root), **workspace.manifest.get("ingest", {})},
        "settings": _settings_snapshot(rt.settings),
        "setups": rows,
    }
    reporting.write_json(out_path / "retrieval.json", report)
    markdown = reporting.retrieval_markdown(report)
    (out_path / "retrieval.md").write_text(markdown)
    reporting.retrieval_plot(out_path / "retrieval.png", report)
    if as_json:
        out.out(json.dumps(report, indent=2, default=str))
    else:
        out.print(markdown, highlight=False, markup=False, soft_wrap=True)
        out.print(
            f"wrote {out_path}/retrieval.md, retrieval.json, retrieval.png; TREC runs and qrels in {runs_dir}",
            highlight=False,
        )


def _check_rerankers(specs: Iterable[Any], settings: Settings) -> None:
    wanted = {s.rerank or settings.rerank for s in specs if s.base != "bm25-okapi"}
    if "cross-encoder" in wanted and not settings.rerank_model_path:
        raise EvaluationError(
            "a cross-encoder setup needs a local CrossEncoder model",
            hint="set KAG_RERANK_MODEL_PATH to a sentence-transformers CrossEncoder folder (none ships offline)",
        )


def _settings_snapshot(s: Settings) -> dict[str, Any]:
    keys = (
        "chunk_size",
        "chunk_overlap",
        "graph_enabled",
        "retrieval_depth",
        "rrf_k",
        "weight_dense",
        "weight_lexical",
        "weight_graph",
        "graph_hops",
        "rerank",
        "rerank_depth",
    )
    optional = (
        "fusion",
        "fusion_document_weight",
        "depth_dense",
        "depth_lexical",
        "depth_graph",
        "dense_feedback_chunks",
        "dense_feedback_weight",
    )
    extra = {k: getattr(s, k) for k in optional if hasattr(s, k)}
    return {k: getattr(s, k) for k in keys} | extra


class SetupBuilder:
    """Turns parsed setup names into document rankers over the evaluation index."""

    def __init__(self, rt: Runtime, workspace: EvalWorkspace, *, depth: int, corpus: Callable[[], Iterable[CorpusDoc]]):
        from pipelines.evaluation.retrieval import DocumentMap
        from pipelines.evaluation.workspace import COLLECTION

        self.rt = rt
        self.depth = depth
        self.corpus = corpus
        self.collection = COLLECTION
        self.documents = DocumentMap(rt.stores.ledger, COLLECTION, workspace.corpus_id)
        self._bm25: Any = None

    def build(self, spec: Any) -> tuple[Any, dict[str, Any]]:
        from pipelines.evaluation.retrieval import Bm25OkapiRanker, KagDocRanker
        from pipelines.evaluation.setups import BM25_OKAPI
        from pipelines.rerank import make_reranker
        from pipelines.retrieve import HybridRetriever, hydrate

        s, rt = self.rt.settings, self.rt
        if spec.base == BM25_OKAPI:
            if self._bm25 is None:
                self._bm25 = Bm25OkapiRanker(list(self.corpus()), depth=self.depth)
            return self._bm25, {
                "description": "rank-bm25 BM25Okapi (k1=1.5, b=0.75) over whole documents, lowercase word tokens",
                "depth_documents": self.depth,
            }
        rerank = spec.rerank or s.rerank
        params: dict[str, Any] = {"depth": self.depth, "rerank": rerank}
        if spec.is_default:
            retriever = rt.retriever("hybrid")
            assert isinstance(retriever, HybridRetriever)
            params |= _hybrid_params(retriever) | {"graph_hops": s.graph_hops}
            description = "the shipped defaults: " + _describe_hybrid(retriever)
        elif len(spec.retrievers) == 1:
            retriever = rt.retriever(spec.retrievers[0])
            description = {
                "lexical": "Tantivy BM25 over chunk title + text",
                "dense": "all-MiniLM-L6-v2 cosine in Qdrant Edge",
                "graph": f"knowledge graph: query entities expanded {s.graph_hops} hop(s) to chunks",
            }[spec.retrievers[0]]
        else:
            full = rt.retriever("hybrid")
            assert isinstance(full, HybridRetriever)
            weights = {n: full.weights.get(n, 1.0) for n in spec.retrievers}
            if "graph" in weights and weights["graph"] <= 0:
                weights["graph"] = ABLATION_GRAPH_WEIGHT  # the shipped weight is 0; the ablation shows why
            retriever = HybridRetriever(
                {n: full.retrievers[n] for n in spec.retrievers},
                weights=weights,
                depth=full.depth,
                rrf_k=full.rrf_k,
                fusion=full.fusion,
                document_weight=full.document_weight,
                feedback_chunks=full.feedback_chunks,
                feedback_weight=full.feedback_weight,
                depths={n: d for n, d in full.depths.items() if n in spec.retrievers},
            )
            params |= _hybrid_params(retriever)
            description = _describe_hybrid(retriever)
        reranker = None
        if rerank != "none":
            reranker = make_reranker(
                rerank,
                model_path=s.rerank_model_path,
                yes_probability=rt._chat_yes_probability if rerank == "llm" else None,
            )
            params["rerank_depth"] = s.rerank_depth
            description += f"; rerank top {s.rerank_depth} chunks with {rerank}"
        params["description"] = description
        ranker = KagDocRanker(
            retriever,
            self.collection,
            self.documents,
            depth=self.depth,
            reranker=reranker,
            rerank_depth=s.rerank_depth,
            hydrate=lambda hits: hydrate(rt.stores.ledger, hits),
        )
        return ranker, params


#: graph weight of the `hybrid+graph` ablation when the shipped KAG_WEIGHT_GRAPH is 0
ABLATION_GRAPH_WEIGHT = 0.5


def _hybrid_params(r: Any) -> dict[str, Any]:
    return {
        "retrievers": list(r.retrievers),
        "weights": {n: r.weights.get(n, 1.0) for n in r.retrievers},
        "fusion": r.fusion,
        "rrf_k": r.rrf_k,
        "document_weight": r.document_weight,
        "dense_feedback": {"chunks": r.feedback_chunks, "weight": r.feedback_weight},
        "retriever_depth": {n: r.depths.get(n, r.depth) for n in r.retrievers},
    }


def _describe_hybrid(r: Any) -> str:
    parts = [f"{n}×{r.weights.get(n, 1.0):g}" for n in r.retrievers if r.weights.get(n, 1.0) > 0]
    how = {"rrf": f"RRF k={r.rrf_k}", "score": "relative score fusion", "zscore": "z-score fusion"}[r.fusion]
    if r.document_weight > 0:
        how += f", document evidence ×{r.document_weight:g}"
    if r.feedback_chunks > 0 and r.weights.get("dense", 1.0) > 0 and "dense" in r.retrievers:
        how += f", dense feedback from the top {r.feedback_chunks} (×{r.feedback_weight:g})"
    return f"{' + '.join(parts)}, {how}"


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise EvaluationError(f"{option} takes comma-separated numbers, got {text!r}") from exc
    if not values or any(v < 0 for v in values):
        raise EvaluationError(f"{option} needs at least one value, none negative; got {text!r}")
    return values


def _ints(text: str, option: str) -> tuple[int, ...]:
    values = _floats(text, option)
    if any(v != int(v) or v < 1 for v in values):
        raise EvaluationError(f"{option} takes positive whole numbers, got {text!r}")
    return tuple(int(v) for v in values)


@eval_app.command("tune")
def tune_command(
    dataset: DatasetOpt,
    split: SplitOpt = "train",
    limit_queries: LimitOpt = None,
    fusion: Annotated[str, typer.Option(help="Fusion methods to try (rrf, score, zscore).")] = "rrf,score,zscore",
    rrf_k: Annotated[str, typer.Option(help="RRF k values.")] = "10,30,60,100",
    weight_dense: Annotated[str, typer.Option(help="Dense weights (lexical weight is --weight-lexical).")] = (
        "0.5,0.75,1,1.25,1.5,2"
    ),
    weight_lexical: Annotated[str, typer.Option(help="Lexical weights.")] = "1",
    weight_graph: Annotated[str, typer.Option(help="Graph weights (0 leaves the graph out).")] = "0,0.25,0.5",
    depth_dense: Annotated[str, typer.Option(help="Dense candidate depths.")] = "50,100",
    depth_lexical: Annotated[str, typer.Option(help="Lexical candidate depths.")] = "50,100",
    depth_graph: Annotated[str, typer.Option(help="Graph candidate depths.")] = "50",
    graph_hops: Annotated[str, typer.Option(help="Graph expansion hops.")] = "1,2",
    document_weight: Annotated[
        str, typer.Option(help="Shares of document evidence added to each chunk's fused score (0: none).")
    ] = "0",
    top: Annotated[int, typer.Option(min=1, help="Rows of the ranked table to print.")] = 15,
    out_dir: OutOpt = None,
    work_dir: WorkDirOpt = None,
) -> None:
    """Grid-search the query-time fusion settings on one split (tune on train, report on test)."""
    _handle(_tune)(**locals())


def _tune(
    dataset: Path,
    split: str,
    limit_queries: int | None,
    fusion: str,
    rrf_k: str,
    weight_dense: str,
    weight_lexical: str,
    weight_graph: str,
    depth_dense: str,
    depth_lexical: str,
    depth_graph: str,
    graph_hops: str,
    document_weight: str,
    top: int,
    out_dir: Path | None,
    work_dir: Path | None,
) -> None:
    from pipelines.evaluation import report as reporting
    from pipelines.evaluation.datasets import BeirDataset, evaluation_queries
    from pipelines.evaluation.retrieval import DocumentMap
    from pipelines.evaluation.tuning import Grid, collect_rankings, marginals, sweep
    from pipelines.evaluation.workspace import COLLECTION, default_work_dir
    from pipelines.retrieve import FUSION_METHODS, GraphRetriever

    settings = Settings()
    data = BeirDataset.open(dataset)
    queries, qrels, _ = evaluation_queries(data, split, limit=limit_queries)
    methods = tuple(m.strip() for m in fusion.split(",") if m.strip())
    unknown = [m for m in methods if m not in FUSION_METHODS]
    if unknown or not methods:
        raise EvaluationError(
            f"unknown fusion method(s) {', '.join(unknown) or repr(fusion)}", hint="use rrf, score and/or zscore"
        )
    grid = Grid(
        fusion=methods,
        rrf_k=_ints(rrf_k, "--rrf-k"),
        weight_dense=_floats(weight_dense, "--weight-dense"),
        weight_lexical=_floats(weight_lexical, "--weight-lexical"),
        weight_graph=_floats(weight_graph, "--weight-graph"),
        depth_dense=_ints(depth_dense, "--depth-dense"),
        depth_lexical=_ints(depth_lexical, "--depth-lexical"),
        depth_graph=_ints(depth_graph, "--depth-graph"),
        graph_hops=tuple(int(h) for h in _floats(graph_hops, "--graph-hops")),
        document_weight=_floats(document_weight, "--document-weight"),
    )
    configs = list(grid.configs())
    out_path = reporting.prepare_out_dir(out_dir or Path("eval-results") / f"{data.name}-{split}-tune")
    rt, workspace = open_workspace(
        settings, work_dir or default_work_dir(), data.name, data.corpus_sha256(), data.corpus
    )
    try:
        retrievers: dict[str, Any] = {"dense": rt.retriever("dense"), "lexical": rt.retriever("lexical")}
        if any(w > 0 for w in grid.weight_graph):
            from kag.stores.graph import GraphCache

            graphs = GraphCache(rt.stores.ledger)
            for hops in grid.graph_hops:
                # as `Runtime.retriever` builds it: spaCy query entities, embedding-based linking
                retrievers[f"graph@{hops}"] = GraphRetriever(
                    rt.query_extractor,
                    graphs,
                    hops=hops,
                    embedder=rt.name_embedder,
                    link_threshold=rt.settings.graph_link_threshold,
                )
        with _progress("retrieving once per retriever") as bar:
            task = bar.add_task("collect", total=len(queries))
            cache = collect_rankings(
                retrievers,
                queries,
                COLLECTION,
                grid.max_depth,
                cache_dir=workspace.root / "rankings",
                on_query=lambda: bar.advance(task),
                variants={"lexical": f"@title{rt.settings.lexical_title_boost:g}"}
                | graph_variants(rt, grid.graph_hops),
            )
        documents = DocumentMap(rt.stores.ledger, COLLECTION, workspace.corpus_id)
        hits = [h for per_query in cache.values() for ranking in per_query.values() for h in ranking]
        doc_of = dict(zip([h.chunk_id for h in hits], documents.corpus_ids(hits), strict=True))
    finally:
        rt.close()
    with _progress(f"{len(configs)} configurations") as bar:
        task = bar.add_task("sweep", total=len(configs))
        rows = sweep(configs, cache, qrels, doc_of, on_config=lambda: bar.advance(task))
    report = {
        "dataset": data.name,
        "split": split,
        "queries": len(queries),
        "index": {"path": str(workspace.root), "fingerprint": workspace.manifest.get("fingerprint")},
        "grid": {k: list(v) for k, v in vars(grid).items()},
        "configs": len(rows),
        "best": rows[0],
        "marginals": marginals(rows),
        "rows": rows,
    }
    reporting.write_json(out_path / "tune.json", report)
    lines = [
        f"# Fusion sweep: {data.name} {split} ({len(queries)} queries, {len(rows)} configurations)",
        "",
        "| rank | configuration | nDCG@10 | R@100 |",
        "|---:|---|---:|---:|",
    ]
    for i, row in enumerate(rows[:top], start=1):
        lines.append(f"| {i} | {row['label']} | {row['metrics']['ndcg@10']:.4f} | {row['metrics']['recall@100']:.4f} |")
    lines += ["", "Best nDCG@10 reached with each value of each setting:", ""]
    for key, values in marginals(rows).items():
        lines.append(f"- {key}: " + ", ".join(f"{v} → {score:.4f}" for v, score in values.items()))
    markdown = "\n".join(lines) + "\n"
    (out_path / "tune.md").write_text(markdown)
    out.print(markdown, highlight=False, markup=False, soft_wrap=True)
    out.print(f"wrote {out_path}/tune.md, tune.json", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach `kag eval` to the main app."""
    from kag.cli import eval_answers  # noqa: F401 - registers `kag eval answers` on eval_app

    app.add_typer(eval_app, name="eval")
