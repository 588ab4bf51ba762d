"""`kag audit …`: list, show and verify the hash-chained audit records of answers.

Only the ledger is opened, never the vector or full-text stores, so these commands work while
another process (`kag serve`, an ingest job) holds the data dir lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from kag.cli.common import err, fail, handle_errors, out, parse_time, print_json
from kag.errors import KagError, ReplayError
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.audit import AuditLog

audit_app = typer.Typer(
    help="Inspect the tamper-evident audit log: one hash-chained record per answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_fail = fail
_print_json = print_json


@contextmanager
def _audit_log() -> Iterator[AuditLog]:
    from kag.audit import AuditLog
    from kag.ledger import Ledger

    ledger = Ledger(Settings().resolved_database_url)
    try:
        yield AuditLog(ledger)
    finally:
        ledger.close()


_parse_time = parse_time


@audit_app.command("list")
@handle_errors
def list_records(
    principal: Annotated[str | None, typer.Option(help="Only records of this principal.")] = None,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only records that searched it.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only records at or after this ISO-8601 time (naive is UTC).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only records before this ISO-8601 time (naive is UTC).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many records.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many of the newest matches.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records (without bodies) as JSON.")] = False,
) -> None:
    """List audit records, newest first."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    with _audit_log() as log:
        entries = log.list(
            since=start, until=end, principal=principal, collection=collection, limit=limit, offset=offset
        )
    rows = [{k: v for k, v in e.to_dict().items() if k != "body"} for e in entries]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no audit records")
        return
    # one line per record; ids and times stay whole on narrow terminals, the rest is cut with "…"
    table = Table(
        Column("id", no_wrap=True, min_width=34),
        Column("created (UTC)", no_wrap=True, min_width=19),
        Column("principal", no_wrap=True, overflow="ellipsis", max_width=24),
        Column("collections", no_wrap=True, overflow="ellipsis", max_width=24),
        Column("question", no_wrap=True, overflow="ellipsis", min_width=8),
    )
    for e in entries:
        table.add_row(
            e.id,
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(e.principal),
            escape(", ".join(e.collections)),
            escape(e.question),
        )
    out.print(table)


@audit_app.command()
@handle_errors
def show(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="Audit record id (see `kag audit list`).")],
) -> None:
    """Print one audit record, body included, as JSON."""
    with _audit_log() as log:
        entry = log.get(record_id)
    _print_json(entry.to_dict())


@audit_app.command()
@handle_errors
def verify(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """Recompute every hash and link of the audit chain; exit 1 at the first broken record."""
    with _audit_log() as log:
        report = log.verify()
    if as_json:
        _print_json(report.to_dict())
        if not report.ok:
            raise typer.Exit(1)
        return
    if report.broken is not None:
        b = report.broken
        _fail(f"audit chain broken at record {b.id} (seq {b.seq}): {b.detail}")
    out.print(f"audit chain intact: {report.checked} records", highlight=False)


@audit_app.command()
@handle_errors
def replay(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="Audit record id (see `kag audit list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the replay report as JSON.")] = False,
) -> None:
    """Re-run a recorded answer with its recorded prompt, model and seed; exit 1 unless the output is identical."""
    from kag.models.llm_cache import ModelCache, resolve_llm_model
    from pipelines.replay import replay as run_replay

    with _audit_log() as log:
        broken = log.check_record(record_id)
        if broken is not None:
            raise ReplayError(
                f"audit record {record_id} was altered ({broken.detail}), so it cannot be replayed",
                hint="run `kag audit verify`",
            )
        entry = log.get(record_id)
    settings = Settings()
    cache = ModelCache(settings.model_cache_dir)
    candidates = []
    try:
        candidates.append(resolve_llm_model(settings.llm_model_spec, cache))
    except KagError:
        pass  # the configured model is gone or unknown: an installed catalog model may still be the recorded one
    # every installed catalog model, so a record answered by a model since switched away from still replays
    candidates += [str(path) for model in cache.catalog.values() if (path := cache.installed_path(model))]
    report = run_replay(entry, candidates=candidates)
    if as_json:
        _print_json(report.to_dict())
    elif report.identical:
        out.print(
            f"replay identical: {len(report.replayed)} characters from {escape(report.model_path)} "
            f"(sha256 {report.model_sha256[:16]}…)",
            highlight=False,
        )
    else:
        at = report.first_difference or 0
        err.print(f"[bold red]replay differs[/] at character {at}", highlight=False)
        err.print(f"  recorded: {escape(report.recorded[at : at + 80])!r}", highlight=False)
        err.print(f"  replayed: {escape(report.replayed[at : at + 80])!r}", highlight=False)
    if not report.identical:
        raise typer.Exit(1)
