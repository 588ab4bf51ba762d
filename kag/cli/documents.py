"""`kag documents [show ID]`: list the ledger's documents, or show one with its chunks, pages and graph.

Only the ledger is opened, so these commands start fast and work while another process holds the data dir.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from kag.cli.common import handle_errors, ledger, out, print_json, print_table
from kag.settings import Settings

#: characters of the document's text that `kag documents show` prints
EXCERPT_CHARS = 500

documents_app = typer.Typer(
    help="List documents: id, title, version, status, source; `kag documents show ID` for one.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@documents_app.callback()
@handle_errors
def list_documents(
    ctx: typer.Context,
    collection: Annotated[str | None, typer.Option("--collection", "-c")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List documents: id, title, version, status, source; `kag documents show ID` for one."""
    if ctx.invoked_subcommand is not None:
        return
    absolute = Settings().source_uri == "absolute"
    with ledger() as led:
        rows = led.documents(collection=collection)
    data = [
        {
            "id": r.id,
            "collection": r.collection,
            "title": r.title,
            "version": r.version,
            "status": r.status,
            "mime_type": r.mime_type,
            "source_uri": r.shown_source_uri(absolute),
            "graph_status": r.graph_status,
            "graph_error": r.graph_error,
        }
        for r in rows
    ]
    if as_json:
        print_json(data)
        return
    # ids and collections stay whole (they go into `kag delete`), a long source folds onto more lines
    table = Table(
        Column("id", no_wrap=True),
        Column("collection", no_wrap=True),
        "title",
        "v",
        "status",
        "graph",
        Column("source", overflow="fold"),
    )
    for d in data:
        graph = str(d["graph_status"] or "-") + (f": {d['graph_error']}" if d["graph_error"] else "")
        table.add_row(
            *(escape(str(d[k])) for k in ("id", "collection", "title", "version", "status")),
            escape(graph),
            escape(str(d["source_uri"])),
        )
    print_table(table)


@documents_app.command()
@handle_errors
def show(
    document_id: Annotated[str, typer.Argument(metavar="ID", help="Document id (see `kag documents`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the document with a text excerpt as JSON.")] = False,
) -> None:
    """Show one document: its metadata, a text excerpt, its chunks and pages, and what the graph holds of it."""
    with ledger() as led:
        doc = led.get_document(document_id)
        chunks = led.chunks_of(document_id)
        entities, mentions, relations = led.document_graph_counts(document_id)
    pages = sorted({c.page for c in chunks if c.page is not None})
    data: dict[str, Any] = {
        "id": doc.id,
        "collection": doc.collection,
        "title": doc.title,
        "version": doc.version,
        "status": doc.status,
        "mime_type": doc.mime_type,
        "source_uri": doc.shown_source_uri(Settings().source_uri == "absolute"),
        "sha256": doc.sha256,
        "size_bytes": doc.size_bytes,
        "characters": len(doc.text),
        "updated_at": doc.updated_at.isoformat(),
        "excerpt": doc.text[:EXCERPT_CHARS],
        "pages": pages,
        "graph": {
            "status": doc.graph_status,
            "error": doc.graph_error,
            "entities": entities,
            "mentions": mentions,
            "relations": relations,
        },
        "chunks": [
            {
                "id": c.id,
                "ordinal": c.ordinal,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "page": c.page,
                "heading_path": list(c.heading_path or []),
                "tokens": c.token_count,
            }
            for c in chunks
        ],
    }
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]{escape(doc.title or doc.id)}[/]", highlight=False)
    for label, key in (
        ("id", "id"),
        ("collection", "collection"),
        ("version", "version"),
        ("status", "status"),
        ("type", "mime_type"),
        ("source", "source_uri"),
        ("sha256", "sha256"),
        ("characters", "characters"),
        ("updated", "updated_at"),
    ):
        out.print(f"  {label:<11}{escape(str(data[key]))}", highlight=False, soft_wrap=True)
    out.print(f"  {'pages':<11}{_ranges(pages) or 'none (no page numbers)'}", highlight=False)
    graph = f"{entities} entities, {mentions} mentions, {relations} relations"
    if doc.graph_status:
        graph = f"{doc.graph_status}: {graph}" + (f" ({doc.graph_error})" if doc.graph_error else "")
    out.print(f"  {'graph':<11}{graph}", highlight=False)
    more = "…" if len(doc.text) > EXCERPT_CHARS else ""
    out.print("\n[bold]Text[/]", highlight=False)
    out.print(escape(data["excerpt"] + more), highlight=False, soft_wrap=True)
    out.print(f"\n[bold]Chunks[/] ({len(chunks)})", highlight=False)
    table = Table(Column("#", justify="right"), Column("id", no_wrap=True), "chars", "page", "heading", "tokens")
    for c in data["chunks"]:
        table.add_row(
            str(c["ordinal"]),
            c["id"],
            f"{c['char_start']}-{c['char_end']}",
            "" if c["page"] is None else str(c["page"]),
            escape(" > ".join(str(h) for h in c["heading_path"])),
            str(c["tokens"]),
        )
    print_table(table)


def _ranges(pages: list[int]) -> str:
    """1, 2, 3, 5 -> '1-3, 5'."""
    runs: list[list[int]] = []
    for page in pages:
        if runs and page == runs[-1][1] + 1:
            runs[-1][1] = page
        else:
            runs.append([page, page])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
