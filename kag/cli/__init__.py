"""The `kag` command line (Typer + rich): every command prints `Error: ...` and exits non-zero on failure."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kag.errors import KagError
from kag.settings import Settings, settings_table

app = typer.Typer(
    name="kag",
    help="Knowledge-augmented generation: ingest documents, search them, get cited answers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn kag errors into `Error: ...` on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KagError as exc:
            err.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _runtime() -> Any:
    from kag.cli.runtime import Runtime

    return Runtime(Settings())


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class Mode(StrEnum):
    dense = "dense"
    lexical = "lexical"
    graph = "graph"
    hybrid = "hybrid"


CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name.")]


@app.command()
@handle_errors
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (recursive) or glob patterns.")],
    collection: CollectionOpt = "default",
    sync: Annotated[bool, typer.Option(help="Delete documents whose source files under PATHS are gone.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job report as JSON.")] = False,
) -> None:
    """Ingest files into a collection: parse, chunk, extract the graph, embed and index."""
    from kag.cli.progress import IngestProgress

    rt = _runtime()
    try:
        with IngestProgress(err, enabled=not as_json and err.is_terminal) as progress:
            report = rt.ingestor.ingest(paths, collection, sync=sync, listener=progress)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Search chunks by meaning, keywords, the knowledge graph, or all three fused."""
    from pipelines.retrieve import hydrate

    rt = _runtime()
    try:
        known = set(rt.stores.ledger.collections())
        unknown = [c for c in collection if c not in known]
        if unknown:
            raise KagError(
                f"no collection named {', '.join(unknown)}",
                hint=f"known collections: {', '.join(sorted(known)) or 'none yet; run kag ingest'}",
            )
        hits = hydrate(rt.stores.ledger, rt.retriever(mode.value).retrieve(query, k, collection))
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
    rt = _runtime()
    try:
        ledger = rt.stores.ledger
        rows = [
            {
                "collection": name,
                "documents": len(ledger.documents(collection=name)),
                "chunks": len(ledger.chunk_ids(name)),
            }
            for name in ledger.collections()
        ]
    finally:
        rt.close()
    if as_json:
        _print_json(rows)
        return
    table = Table("collection", "documents", "chunks")
    for r in rows:
        table.add_row(str(r["collection"]), str(r["documents"]), str(r["chunks"]))
    out.print(table)


@app.command()
@handle_errors
def documents(
    collection: Annotated[str | None, typer.Option("--collection", "-c")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List documents: id, title, version, status, source."""
    rt = _runtime()
    try:
        rows = rt.stores.ledger.documents(collection=collection)
    finally:
        rt.close()
    data = [
        {
            "id": r.id,
            "collection": r.collection,
            "title": r.title,
            "version": r.version,
            "status": r.status,
            "mime_type": r.mime_type,
            "source_uri": r.source_uri,
        }
        for r in rows
    ]
    if as_json:
        _print_json(data)
        return
    table = Table("id", "collection", "title", "v", "status", "source")
    for d in data:
        table.add_row(*(str(d[k]) for k in ("id", "collection", "title", "version", "status", "source_uri")))
    out.print(table)


@app.command()
@handle_errors
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="Show one job with its per-file errors.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List recent ingestion jobs, or show one."""
    rt = _runtime()
    try:
        ledger = rt.stores.ledger
        if job_id is None:
            data: Any = [_job_dict(j) for j in ledger.jobs()]
        else:
            job, errors = ledger.get_job(job_id)
            data = _job_dict(job) | {"errors": [{"path": e.path, "code": e.code, "message": e.message} for e in errors]}
    finally:
        rt.close()
    if as_json or job_id is not None:
        _print_json(data)
        return
    table = Table("id", "collection", "status", "added", "updated", "unchanged", "failed", "chunks", "started")
    for j in data:
        table.add_row(
            *(
                str(j[k])
                for k in (
                    "id",
                    "collection",
                    "status",
                    "documents_added",
                    "documents_updated",
                    "documents_unchanged",
                    "documents_failed",
                    "chunks_added",
                    "started_at",
                )
            )
        )
    out.print(table)


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


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
