"""`kag audit …`: list, show and verify the hash-chained audit records of answers.

Only the ledger is opened, never the vector or full-text stores, so these commands work while
another process (`kag serve`, an ingest job) holds the data dir lock.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from kag.cli.common import err, fail, handle_errors, out, parse_time, print_json, print_table
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
    from kag.cli.runtime import audit_log
    from kag.ledger import Ledger

    settings = Settings()
    ledger = Ledger(settings.resolved_database_url)
    try:
        yield audit_log(settings, ledger)
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
    # ids, principals and times stay whole on any terminal (so they can be copied); the rest wraps
    table = Table(
        Column("id", no_wrap=True),
        Column("created (UTC)", no_wrap=True),
        Column("principal", no_wrap=True),
        Column("collections", overflow="fold"),
        Column("question", overflow="fold", min_width=8),
        Column("intact", no_wrap=True),
    )
    for e in entries:
        table.add_row(
            e.id,
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(e.principal),
            escape(", ".join(e.collections)),
            escape(e.question) if e.readable else f"[red]{escape(e.error or '')}[/]",
            "yes" if e.intact else "[bold red]NO[/]",
        )
    print_table(table)
    altered = [e for e in entries if not e.intact]
    if altered:
        err.print(
            f"[bold red]{len(altered)} record(s) not intact[/]: "
            + "; ".join(f"{e.id}: {escape(e.error or '')}" for e in altered)
            + " (run `kag audit verify`)",
            highlight=False,
            soft_wrap=True,
        )


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
def verify(
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head", metavar="HASH", help="A head hash noted earlier (`kag audit head`): the chain must hold it"
        ),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            metavar="PATH",
            help="Compare with the signed checkpoints in PATH, e.g. the copy shipped to another host "
            "(KAG_AUDIT_CHECKPOINT_PATH is compared whenever it is set).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Recompute every hash and link of the audit chain, and compare it with the anchors kept outside the
    ledger (an expected head, signed checkpoints); exit 1 at the first problem."""
    from kag.cli.runtime import checkpoint_file

    source = checkpoint_file(Settings(), checkpoints) if checkpoints is not None else None
    with _audit_log() as log:
        report = log.verify(expect_head=expect_head, checkpoints=source)
    if as_json:
        _print_json(report.to_dict())
        if not report.ok:
            raise typer.Exit(1)
        return
    if report.broken is not None:
        b = report.broken
        where = f"at record {b.id} (seq {b.seq})" if b.id is not None else "at its anchors"
        _fail(f"audit chain broken {where}: {b.detail}")
    anchors = []
    if report.checkpoints:
        anchors.append(f"{report.checkpoints} signed checkpoints agree")
    if expect_head:
        anchors.append("the expected head is in it")
    suffix = f" ({'; '.join(anchors)})" if anchors else ""
    out.print(f"audit chain intact: {report.checked} records{suffix}", highlight=False, soft_wrap=True)


@audit_app.command()
@handle_errors
def head(as_json: Annotated[bool, typer.Option("--json", help="Print the head as JSON.")] = False) -> None:
    """Print the newest record's hash and the number of records: note it elsewhere, compare with --expect-head."""
    with _audit_log() as log:
        current = log.head()
    if as_json:
        _print_json(current.to_dict())
        return
    sys.stdout.write(f"{current.hash} {current.count} records\n")


@audit_app.command()
@handle_errors
def checkpoint() -> None:
    """Verify the chain and append a signed checkpoint of its head to KAG_AUDIT_CHECKPOINT_PATH now."""
    with _audit_log() as log:
        written = log.checkpoint()
    out.print(f"checkpoint: {written.count} records, head {written.head}", highlight=False, soft_wrap=True)


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
