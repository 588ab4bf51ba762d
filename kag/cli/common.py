"""What every `kag` command shares: the consoles, the one error shape, JSON output, the runtime."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.segment import Segments
from rich.table import Table

from kag.errors import KagError
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.cli.runtime import Runtime
    from kag.ledger import Ledger

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    """Print `Error: message` on stderr and exit 1: the CLI's one error shape."""
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def handle_errors(func: F) -> F:
    """Turn kag errors into `Error: ...` on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KagError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO-8601 option value (naive is UTC), or a KagError that shows the expected form."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KagError(
            f"{option} {value!r} is not an ISO-8601 time", hint="e.g. 2026-11-23 or 2026-11-23T09:00:00Z; naive is UTC"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def print_table(table: Table, console: Console | None = None) -> None:
    """Print `table` without cutting its no-wrap columns (ids, to copy into `kag delete` / `kag keys revoke`).

    On a terminal narrower than the table, rich wraps the other columns and then cuts every column
    with "…", ids included; so the table is laid out at least as wide as its no-wrap columns whole plus
    the others wrapped to their longest word, and a narrower terminal wraps the long lines instead."""
    console = console or out
    wide = console.options.update_width(10_000)
    needed = console.measure(table, options=wide).minimum
    for column in table.columns:
        if column.no_wrap:
            sizes = [Measurement.get(console, wide, cell) for cell in (column.header, *column.cells)]
            needed += max(m.maximum for m in sizes) - max(m.minimum for m in sizes)
    if needed <= console.width:
        console.print(table)
        return
    # Console.print never lays out wider than the console: render at the needed width, print uncropped
    console.print(Segments(console.render(table, console.options.update_width(needed))), crop=False)


@contextmanager
def ledger() -> Iterator[Ledger]:
    """The ledger alone, for commands that only read it: no models, no indexes, no data dir lock, so they
    start fast and work while `kag serve` or an ingest job holds the data dir."""
    from kag.ledger import Ledger

    led = Ledger(Settings().resolved_database_url)
    try:
        yield led
    finally:
        led.close()


def runtime() -> Runtime:
    """The object graph for one command, built from the environment's settings."""
    from kag.cli.runtime import Runtime

    return Runtime(Settings())
