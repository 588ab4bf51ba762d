"""The `kag` command line (Typer + rich): every command prints `Error: ...` and exits non-zero on failure."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from kag.cli.common import err, handle_errors, ledger, out, parse_time, print_json, print_table, runtime
from kag.errors import KagError
from kag.records import verdict_summary
from kag.settings import settings_table

if TYPE_CHECKING:
    from pipelines.answer import MetadataFilter

app = typer.Typer(
    name="kag",
    help="Knowledge-augmented generation: ingest documents, search them, get cited answers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_runtime = runtime
_print_json = print_json


class Mode(StrEnum):
    dense = "dense"
    lexical = "lexical"
    graph = "graph"
    hybrid = "hybrid"


class Executor(StrEnum):
    local = "local"
    ray = "ray"


class GraphMode(StrEnum):
    now = "now"
    later = "later"


CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name.")]
DocumentFilter = Annotated[
    list[str] | None, typer.Option("--document", help="Only this document id; repeat for several.")
]
SourceFilter = Annotated[str | None, typer.Option("--source", help="Only documents whose source path starts so.")]
SinceFilter = Annotated[str | None, typer.Option(help="Only documents updated at or after this ISO-8601 time.")]
UntilFilter = Annotated[str | None, typer.Option(help="Only documents updated at or before this ISO-8601 time.")]


def _metadata_filter(
    document: list[str] | None, source: str | None, since: str | None, until: str | None
) -> MetadataFilter | None:
    from pipelines.answer import MetadataFilter

    flt = MetadataFilter(
        document_ids=tuple(document) if document else None,
        source_prefix=str(Path(source).resolve()) if source else None,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
    )
    return None if flt.empty else flt


@app.command()
@handle_errors
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (recursive) or glob patterns.")],
    collection: CollectionOpt = "default",
    sync: Annotated[bool, typer.Option(help="Delete documents whose source files under PATHS are gone.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job report as JSON.")] = False,
    executor: Annotated[
        Executor | None,
        typer.Option(help="Where parsing and embedding run (default: the KAG_INGEST_EXECUTOR setting)."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: KAG_RAY_ADDRESS; unset: a local Ray)."
        ),
    ] = None,
    graph: Annotated[
        GraphMode | None,
        typer.Option(
            help="Stage 2 (the knowledge graph): now, in this run, or later, with `kag graph build` "
            "(default: KAG_INGEST_GRAPH). Documents are searchable after stage 1 either way."
        ),
    ] = None,
) -> None:
    """Ingest files into a collection: parse, chunk, embed and index (searchable), then extract the graph."""
    from kag.cli.progress import IngestProgress

    rt = _runtime()
    overrides = {"ingest_executor": executor.value if executor else None, "ray_address": ray_address}
    rt.settings = rt.settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    mode = graph.value if graph else rt.settings.ingest_graph
    try:
        with IngestProgress(err, enabled=not as_json and err.is_terminal) as progress:
            report = rt.ingestor.ingest(paths, collection, sync=sync, listener=progress, graph=mode)
    finally:
        rt.close()
    if as_json:
        _print_json(report.to_dict())
    else:
        out.print(
            f"job {report.job_id}: {report.documents_added} added, {report.documents_updated} updated, "
            f"{report.documents_unchanged} unchanged, {report.documents_failed} failed, "
            f"{report.documents_deleted} deleted; {report.chunks_added} chunks in {report.seconds:.1f}s"
        )
        if report.graph is not None:
            g = report.graph
            out.print(f"graph: {g.documents_done} documents done, {g.documents_failed} failed")
        elif mode == "later" and rt.settings.graph_enabled:
            out.print("graph: pending; build it with `kag graph build -c " + collection + "`")
        for e in report.errors:
            err.print(
                f"  [red]failed[/] {escape(e.path)}: {escape(f'[{e.code}] {e.message}')}",
                highlight=False,
                soft_wrap=True,
            )
    if report.status != "completed":
        raise typer.Exit(1)


@app.command()
@handle_errors
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    collection: Annotated[
        list[str], typer.Option("--collection", "-c", help="Collection(s) to search; repeat for several.")
    ] = ["default"],  # noqa: B006 - Typer needs a literal default
    mode: Annotated[Mode, typer.Option(help="Retriever to use.")] = Mode.hybrid,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000, help="Number of results.")] = 10,
    document: DocumentFilter = None,
    source: SourceFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Search chunks by meaning, keywords, the knowledge graph, or all three fused."""
    from pipelines.retrieve import hydrate

    flt = _metadata_filter(document, source, since, until)
    rt = _runtime()
    try:
        _require_collections(rt, collection)
        document_ids = None
        if flt is not None:
            document_ids = rt.stores.ledger.document_ids_matching(
                collection,
                document_ids=list(flt.document_ids) if flt.document_ids is not None else None,
                source_prefix=flt.source_prefix,
                since=flt.since,
                until=flt.until,
            )
        retriever = rt.retriever(mode.value)
        hits = hydrate(
            rt.stores.ledger,
            retriever.retrieve(query, k, collection, document_ids),
            absolute_sources=rt.settings.source_uri == "absolute",
        )
    finally:
        rt.close()
    if as_json:
        _print_json({"query": query, "mode": mode.value, "results": [h.to_dict() for h in hits]})
        return
    if not hits:
        out.print("no results")
        return
    for rank, hit in enumerate(hits, start=1):
        where = f"p.{hit.page} " if hit.page else ""
        heading = " > ".join(hit.heading_path)
        out.print(
            f"[bold]{rank}. {escape(hit.title)}[/] [dim]{where}\\[{hit.char_start}:{hit.char_end}] "
            f"score={hit.score:.4f} {hit.collection}[/]",
            highlight=False,
        )
        if heading:
            out.print(f"   [dim]{escape(heading)}[/]", highlight=False)
        snippet = " ".join(hit.text.split())
        out.print(escape(f"   {snippet[:300]}{'...' if len(snippet) > 300 else ''}"), highlight=False)


class Policy(StrEnum):
    flag = "flag"
    drop = "drop"
    extractive = "extractive"


@app.command()
@handle_errors
def ask(
    question: Annotated[
        str | None, typer.Argument(help="The question to answer from the documents (with --chat: the first one).")
    ] = None,
    collection: Annotated[
        list[str], typer.Option("--collection", "-c", help="Collection(s) to answer from; repeat for several.")
    ] = ["default"],  # noqa: B006 - Typer needs a literal default
    policy: Annotated[
        Policy | None, typer.Option(help="Unsupported sentences: flag, drop, or replace by a quote (extractive).")
    ] = None,
    stream: Annotated[bool, typer.Option(help="Show the model's tokens as they are generated.")] = False,
    document: DocumentFilter = None,
    source: SourceFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verified answer as JSON.")] = False,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            help="Keep a conversation: read one question per line from stdin until an empty line or EOF; "
            "follow-ups are rewritten into standalone questions from the turns before.",
        ),
    ] = False,
) -> None:
    """Answer a question with span-level citations, verified sentence by sentence, and audited."""
    if question is None and not chat:
        raise KagError("give a QUESTION, or --chat to read questions from stdin")
    flt = _metadata_filter(document, source, since, until)
    rt = _runtime()
    if chat:
        try:
            _require_collections(rt, collection)
            _chat(rt, question, collection, policy.value if policy else None, flt, as_json)
        finally:
            rt.close()
        return
    assert question is not None
    try:
        _require_collections(rt, collection)
        on_token = None
        if stream and not as_json:
            err.print("[dim]model output:[/]", highlight=False)

            def on_token(piece: str) -> None:
                err.out(piece, end="", highlight=False)

        result = rt.answer_pipeline.answer(
            question,
            collection,
            principal="cli",
            policy=policy.value if policy else None,
            filters=flt,
            on_token=on_token,
        )
        if stream and not as_json:
            err.print()
    finally:
        rt.close()
    if as_json:
        _print_json(result.to_dict())
        return
    _print_answer(result)


def _chat(rt: Any, first: str | None, collections: list[str], policy: str | None, flt: Any, as_json: bool) -> None:
    """The `--chat` loop: every answer is verified and audited like a single `kag ask`."""
    import sys

    history: list[tuple[str, str]] = []
    pending = [first] if first else []
    while True:
        if pending:
            question = pending.pop()
        else:
            if sys.stdin.isatty():
                err.print("[bold]?[/] ", end="", highlight=False)
            line = sys.stdin.readline()
            if not line or not line.strip():
                return
            question = line.strip()
        result = rt.answer_pipeline.answer(
            question, collections, principal="cli", policy=policy, filters=flt, history=history
        )
        if as_json:
            _print_json(result.to_dict())
        else:
            if result.asked and result.asked != result.question:
                out.print(f"[dim](asked as: {escape(result.question)})[/]", highlight=False)
            _print_answer(result)
            out.print()
        history += [("user", question), ("assistant", result.answer)]


def _print_answer(result: Any) -> None:
    v = result.verification
    out.print(escape(result.answer), highlight=False, soft_wrap=True)
    if getattr(result, "short_answer", None):
        out.print(f"[dim]short answer: {escape(result.short_answer)}[/]", highlight=False)
    if v.abstained:
        out.print(f"[dim](abstained: {escape(v.reason)})[/]", highlight=False)
    if v.citations:
        out.print("\n[bold]Sources[/]")
        for c in v.citations:
            page = f", p. {c.page}" if c.page else ""
            if c.pages is not None and c.pages[1] != c.pages[0]:
                page = f", pp. {c.pages[0]}-{c.pages[1]}"
            out.print(
                f"  \\[{c.source_number}] {escape(c.title)}{page} [dim]{c.document_id} "
                f"\\[{c.char_start}:{c.char_end}][/]",
                highlight=False,
            )
            out.print(f'      "{escape(" ".join(c.quote.split()))}"', highlight=False, soft_wrap=True)
    if v.sentences:
        out.print(f"\n[bold]Verification[/] [dim]({verdict_summary(v.sentences)})[/]", highlight=False)
        for sv in v.sentences:
            if sv.action == "added":  # not the model's: a quote of a hop's evidence that kag added
                mark, said = f"[cyan]{escape(sv.label)}[/]", sv.text
            else:
                mark = "[green]supported[/]" if sv.model_supported else f"[red]{escape(sv.label)}[/]"
                said = sv.original
            out.print(
                f"  {mark} {sv.score:.2f}: {escape(' '.join(said.split()))}",
                highlight=False,
                soft_wrap=True,
            )
    out.print(f"\n[dim]audit record {result.audit_id}[/]", highlight=False)


def _require_collections(rt: Any, names: list[str]) -> None:
    known = set(rt.stores.ledger.collections())
    unknown = [c for c in names if c not in known]
    if unknown:
        raise KagError(
            f"no collection named {', '.join(unknown)}",
            hint=f"known collections: {', '.join(sorted(known)) or 'none yet; run kag ingest'}",
        )


@app.command()
@handle_errors
def delete(
    document_id: Annotated[str | None, typer.Argument(help="Document id (see `kag documents`).")] = None,
    source: Annotated[Path | None, typer.Option(help="Delete the document ingested from this file.")] = None,
    collection: CollectionOpt = "default",
) -> None:
    """Delete a document from the ledger and every index."""
    if (document_id is None) == (source is None):
        raise KagError("give either a DOCUMENT_ID or --source PATH")
    rt = _runtime()
    try:
        if source is not None:
            row = rt.stores.ledger.find_document(collection, str(source.resolve()))
            if row is None:
                raise KagError(f"no document from {source} in collection {collection}")
            document_id = row.id
        assert document_id is not None
        rt.ingestor.delete_document(document_id)
    finally:
        rt.close()
    out.print(f"deleted {document_id}")


@app.command()
@handle_errors
def doctor(
    repair: Annotated[bool, typer.Option(help="Rebuild what drifted from the ledger.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare the ledger with Qdrant, Tantivy and the graph; exit 1 on drift."""
    from ingest import upkeep

    rt = _runtime()
    try:
        report = upkeep.repair(rt.ingestor) if repair else upkeep.check(rt.stores)
    finally:
        rt.close()
    if as_json:
        _print_json(report.to_dict())
    else:
        table = Table("collection", "ledger", "qdrant", "tantivy", "entities", "relations", "status")
        for c in report.collections:
            table.add_row(
                c.collection,
                str(c.ledger_chunks),
                str(c.vector_chunks),
                str(c.fulltext_chunks),
                str(c.entities),
                str(c.relations),
                "[green]consistent[/]" if c.consistent else "[red]drift[/]",
            )
        out.print(table)
        if report.documents_indexing or report.documents_deleting:
            out.print(
                f"[red]{report.documents_indexing} documents left indexing, "
                f"{report.documents_deleting} left deleting[/] (run kag doctor --repair)"
            )
        if report.unknown_collections:
            out.print(f"[red]index entries of unknown collections: {report.unknown_collections}[/]")
        for job in report.stale_jobs:
            out.print(
                f"[red]job {job.job_id} ({job.collection}) is left running by {escape(job.owner)}, which is gone; "
                f"last progress {job.heartbeat_at or 'never'}[/] (kag doctor --repair marks it interrupted)",
                highlight=False,
            )
        if report.graph_pending or report.graph_failed:
            out.print(
                f"graph: {report.graph_pending} documents pending, {report.graph_failed} failed "
                "(kag graph build; failures: kag documents)"
            )
        out.print("consistent" if report.consistent else "[red]drift found[/] (run kag doctor --repair)")
    if not report.consistent:
        raise typer.Exit(1)


@app.command()
@handle_errors
def reindex() -> None:
    """Drop the vector and full-text indexes and rebuild them from the ledger."""
    from ingest import upkeep

    rt = _runtime()
    try:
        total = upkeep.reindex(rt.ingestor, batch_chunks=rt.settings.index_batch_size)
    finally:
        rt.close()
    out.print(f"reindexed {total} chunks")


@app.command()
@handle_errors
def collections(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections with their document and chunk counts."""
    with ledger() as led:
        names = led.collections()
        stats = led.collection_stats(names)
    rows = [{"collection": n, "documents": stats[n][0], "chunks": stats[n][1]} for n in names]
    if as_json:
        _print_json(rows)
        return
    table = Table(Column("collection", no_wrap=True), "documents", "chunks")
    for r in rows:
        table.add_row(escape(str(r["collection"])), str(r["documents"]), str(r["chunks"]))
    print_table(table)


@app.command()
@handle_errors
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="Show one job with its per-file errors.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List recent ingestion jobs, or show one."""
    with ledger() as led:
        if job_id is None:
            rows = led.jobs()
            graphs = led.graph_counts_by_job([j.id for j in rows])
            data: Any = [_job_dict(j) | {"graph": graphs[j.id]} for j in rows]
        else:
            job, errors = led.get_job(job_id)
            data = _job_dict(job) | {
                "graph": led.graph_counts_by_job([job.id])[job.id],
                "errors": [{"path": e.path, "code": e.code, "message": e.message} for e in errors],
            }
    if as_json or job_id is not None:
        _print_json(data)
        return
    table = Table(
        Column("id", no_wrap=True),
        Column("collection", no_wrap=True),
        "status",
        "added",
        "updated",
        "unchanged",
        "failed",
        "chunks",
        "graph",
        Column("started", no_wrap=True),
    )
    for j in data:
        g = j["graph"]
        table.add_row(
            *(
                escape(str(j[k]))
                for k in (
                    "id",
                    "collection",
                    "status",
                    "documents_added",
                    "documents_updated",
                    "documents_unchanged",
                    "documents_failed",
                    "chunks_added",
                )
            ),
            f"{g['done']} done, {g['pending']} pending, {g['failed']} failed",
            str(j["started_at"]),
        )
    print_table(table)


def _job_dict(job: Any) -> dict[str, Any]:
    keys = (
        "id",
        "collection",
        "status",
        "executor",
        "files_total",
        "files_done",
        "documents_added",
        "documents_updated",
        "documents_unchanged",
        "documents_failed",
        "documents_deleted",
        "chunks_added",
        "started_at",
        "finished_at",
        "error",
    )
    return {k: getattr(job, k) for k in keys}


@app.command()
def config(
    markdown: Annotated[bool, typer.Option(help="Print a markdown table (as in the README).")] = False,
) -> None:
    """Show every setting: environment variable, default and description."""
    rows = settings_table()
    if markdown:
        sys.stdout.write(settings_markdown(rows))
        return
    table = Table("variable", "default", "description")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def settings_markdown(rows: list[tuple[str, str, str]] | None = None) -> str:
    """The settings as a markdown table; the README embeds this output."""
    lines = ["| variable | default | description |", "|---|---|---|"]
    for var, default, desc in rows or settings_table():
        lines.append(f"| `{var}` | {f'`{default}`' if default else ''} | {desc} |")
    return "\n".join(lines) + "\n"


from kag.cli.audit import audit_app  # noqa: E402 - sub-apps register after the commands above
from kag.cli.documents import documents_app  # noqa: E402
from kag.cli.eval import register as _register_eval  # noqa: E402
from kag.cli.graph import graph_app  # noqa: E402
from kag.cli.keys import keys_app  # noqa: E402
from kag.cli.models import models_app  # noqa: E402
from kag.cli.serve import serve  # noqa: E402

app.add_typer(audit_app, name="audit")
app.add_typer(documents_app, name="documents")
app.command()(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(graph_app, name="graph")
_register_eval(app)


def command_paths() -> list[list[str]]:
    """Every leaf command as its words after `kag` (sub-apps included), in registration order."""

    def walk(command: Any, prefix: list[str]) -> list[list[str]]:
        # duck-typed: Typer vendors its own click, whose Group is not click.Group
        subcommands = getattr(command, "commands", None)
        if subcommands:
            # a group that runs on its own (`kag documents`) is a command too
            own = [prefix] if prefix and getattr(command, "invoke_without_command", False) else []
            return own + [path for name, sub in subcommands.items() for path in walk(sub, [*prefix, name])]
        return [prefix]

    return walk(typer.main.get_command(app), [])


def cli_reference() -> str:
    """The `--help` of every command as markdown, for the README (rendered at a fixed width)."""
    from typer.testing import CliRunner

    runner = CliRunner()
    parts = []
    for path in command_paths():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        parts.append(f"#### `kag {' '.join(path)}`\n\n```text\n{result.output.strip()}\n```\n")
    return "\n".join(parts)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


from kag.cli import deploy as _deploy  # noqa: E402, F401 - registers `kag migrate`
