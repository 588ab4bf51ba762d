"""`kag keys …`: create, list and revoke API keys of the service.

Only the ledger is opened, never the indexes, so keys can be managed while `kag serve` runs.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from kag.cli.common import print_table
from kag.errors import KagError
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.keys import KeyStore

keys_app = typer.Typer(
    help="Manage API keys of `kag serve`: each has a role (admin, writer, reader, auditor) and collections.",
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


@contextmanager
def _store() -> Iterator[KeyStore]:
    from kag.keys import KeyStore
    from kag.ledger import Ledger

    ledger = Ledger(Settings().resolved_database_url)
    try:
        yield KeyStore(ledger)
    finally:
        ledger.close()


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@keys_app.command()
@handle_errors
def create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. 'hr-chatbot'.")],
    role: Annotated[str, typer.Option(help="admin, writer, reader or auditor.")] = "reader",
    collection: Annotated[
        list[str], typer.Option("--collection", "-c", help="A collection the key may use; repeat; '*' = all.")
    ] = ["*"],  # noqa: B006 - Typer needs a literal default
    default_collection: Annotated[str | None, typer.Option(help="Collection used when a request names none.")] = None,
    rate_limit: Annotated[
        int | None, typer.Option(help="Requests per minute for this key (0 = unlimited); default: the server's.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the key as JSON.")] = False,
) -> None:
    """Create a key and print its secret (shown once; only its hash is stored)."""
    with _store() as store:
        key, secret = store.create(
            name, role, collection, default_collection=default_collection, rate_limit_per_minute=rate_limit
        )
    if as_json:
        _print_json({**key.to_dict(), "secret": secret})
        return
    err.print(
        f"created {key.role.value} key {key.id} ({escape(key.name)}) for {', '.join(key.collections)}; "
        "store the secret now, it is not shown again:",
        highlight=False,
    )
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
@handle_errors
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Show revoked keys too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print keys as JSON.")] = False,
) -> None:
    """List keys: id, name, role, collections, last use (never the secrets)."""
    with _store() as store:
        keys = store.list(include_revoked=include_revoked)
    if as_json:
        _print_json([k.to_dict() for k in keys])
        return
    table = Table(
        Column("id", no_wrap=True),
        "name",
        Column("prefix", no_wrap=True),
        "role",
        "collections",
        "default",
        Column("last used", no_wrap=True),
        Column("revoked", no_wrap=True),
    )
    for k in keys:
        d = k.to_dict()
        table.add_row(
            k.id,
            escape(k.name),
            k.prefix + "…",
            k.role.value,
            ", ".join(k.collections),
            k.default_collection or "",
            d["last_used_at"] or "",
            d["revoked_at"] or "",
        )
    print_table(table, out)


@keys_app.command()
@handle_errors
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `kag keys list`).")]) -> None:
    """Revoke a key; requests with it fail from now on."""
    with _store() as store:
        key = store.revoke(key_id)
    out.print(f"revoked {key.id} ({escape(key.name)})")
