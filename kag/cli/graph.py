"""`kag graph build`: stage 2 (the knowledge graph) of documents that stage 1 already made searchable."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kag.cli.common import err, handle_errors, out, print_json, runtime
from kag.errors import NotFoundError

graph_app = typer.Typer(
    help="The knowledge graph (ingestion's stage 2): build it for documents left pending by "
    "`kag ingest --graph later`.",
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
