"""`kag graph build`: stage 2 (the knowledge graph) of documents that stage 1 already made searchable;
`kag graph show`: an entity's typed relations with grades and evidence (the ledger only, so it works
while `kag serve` runs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kag.cli.common import err, handle_errors, out, print_json, runtime
from kag.errors import NotFoundError
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.ledger import Ledger

graph_app = typer.Typer(
    help="The knowledge graph (ingestion's stage 2): build it for documents left pending by "
    "`kag ingest --graph later`; show an entity's relations with grades and evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@graph_app.command("build")
@handle_errors
def build(
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Only this collection (default: every collection).")
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="Try documents whose graph failed again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was built as JSON.")] = False,
) -> None:
    """Extract entities and relations of every document whose graph is pending, then embed their names."""
    from kag.cli.progress import IngestProgress

    rt = runtime()
    try:
        known = rt.stores.ledger.collections()
        if collection is not None and collection not in known:
            raise NotFoundError(
                f"no collection named {collection}",
                hint=f"known collections: {', '.join(known) or 'none yet; run kag ingest'}",
            )
        reports = []
        with IngestProgress(err, enabled=not as_json and err.is_terminal) as progress:
            for name in [collection] if collection is not None else known:
                reports.append(rt.ingestor.build_graph(name, listener=progress, retry_failed=retry_failed))
    finally:
        rt.close()
    if as_json:
        print_json([r.to_dict() for r in reports])
        return
    table = Table("collection", "graph done", "failed", "still pending", "names embedded")
    for r in reports:
        table.add_row(
            r.collection,
            str(r.documents_done),
            str(r.documents_failed),
            str(r.documents_pending),
            str(r.entities_embedded),
        )
    out.print(table)
    if any(r.documents_failed for r in reports):
        out.print("some documents failed: see `kag documents` for the reasons; retry with --retry-failed")


@contextmanager
def _ledger() -> Iterator[Ledger]:
    from kag.ledger import Ledger

    ledger = Ledger(Settings().resolved_database_url)
    try:
        yield ledger
    finally:
        ledger.close()


@graph_app.command("show")
@handle_errors
def show(
    entity: Annotated[str, typer.Argument(help="The entity's name (case-insensitive), e.g. Redis.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")] = "default",
    limit: Annotated[int, typer.Option(min=1, help="At most this many relations, best grade first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entity and its relations as JSON.")] = False,
) -> None:
    """An entity's relations: type, strength, grade, source kind and the evidence quote with its document offsets."""
    from kag.ledger.graph_view import find_entities, relations_of

    with _ledger() as ledger:
        known = ledger.collections()
        if collection not in known:
            raise NotFoundError(
                f"no collection named {collection}",
                hint=f"known collections: {', '.join(sorted(known)) or 'none yet; run kag ingest'}",
            )
        (found,) = find_entities(ledger, [collection], entity)
        relations = relations_of(ledger, collection, [found.entity_id], limit=limit)
    if as_json:
        print_json({"entity": found.to_dict(), "relations": [r.to_dict() for r in relations]})
        return
    out.print(
        f"[bold]{escape(found.name)}[/] ({escape(found.label)}) in {escape(collection)}: "
        f"{found.mentions} mentions, {len(relations)} relations",
        highlight=False,
    )
    if not relations:
        return
    table = Table("relation", "strength", "grade", "kind", "evidence", show_lines=True)
    for r in relations:
        conflict = f" [red]({r.conflict} a conflict)[/]" if r.conflict else ""
        ev = r.evidence
        table.add_row(
            f"{escape(r.source)} [cyan]{r.type}[/] {escape(r.target)}{conflict}",
            f"{r.strength:.2f}",
            r.grade + (f" ({r.documents} docs)" if r.documents > 1 else ""),
            r.source_kind,
            f"“{escape(ev.quote)}”\n[dim]{escape(ev.title or ev.source_uri)} [{ev.doc_start}:{ev.doc_end}] "
            f"{ev.document_id}[/]",
        )
    out.print(table)
