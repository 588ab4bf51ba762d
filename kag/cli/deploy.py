"""Commands for deployments: `kag migrate` brings the ledger schema up to date before a server starts."""

from __future__ import annotations

from typing import Annotated

import typer

from kag.cli import app, handle_errors, out
from kag.settings import Settings


@app.command()
@handle_errors
def migrate(
    stores: Annotated[
        bool, typer.Option(help="Also create the Qdrant collections (vectors, lexical) if they are missing.")
    ] = True,
) -> None:
    """Upgrade the ledger to the newest schema (and create missing index collections); safe to repeat."""
    from alembic.migration import MigrationContext

    from kag.ledger import Ledger

    settings = Settings()
    ledger = Ledger(settings.resolved_database_url)  # runs the Alembic migrations
    try:
        with ledger.engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
    finally:
        ledger.close()
    out.print(f"ledger {ledger.safe_url} at revision {revision}")
    if stores and settings.qdrant_url:
        from kag.cli.runtime import Runtime

        rt = Runtime(settings)
        try:
            rt.stores  # noqa: B018 - opening the stores creates the collections
        finally:
            rt.close()
        out.print(f"Qdrant collections ready at {settings.qdrant_url}")
