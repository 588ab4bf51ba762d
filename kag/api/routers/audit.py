"""The audit log over HTTP: list, export and read answer records, verify the hash chain, read its head
(admin and auditor keys).

Access is decided from what was hashed: a record's collections come from its payload, never from the
columns beside it, so editing those columns cannot show a record to a key outside its collections.
A record whose payload cannot be read has no trustworthy collections; only keys over every
collection see it (marked `intact: false`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from kag.api.auth import Action, check_collection, require, services
from kag.api.schemas import AuditHeadStatus, AuditList, AuditRecord, AuditSummary, ChainStatus
from kag.audit import AuditEntry, AuditLog
from kag.errors import InvalidRequestError, NotFoundError
from kag.keys import ApiKey

router = APIRouter(prefix="/v1/audit", tags=["audit"])

#: records read per query while exporting
_EXPORT_PAGE = 500
CSV_COLUMNS = (
    "id",
    "seq",
    "created_at",
    "principal",
    "principal_name",
    "collections",
    "question",
    "answer",
    "abstained",
    "sentences",
    "supported",
    "unsupported",
    "replaced",
    "citations",
    "intact",
    "error",
)


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


def _key_names(request: Request) -> dict[str, str]:
    """Key id -> name, revoked keys included: old records name keys that are gone."""
    return {k.id: k.name for k in services(request).keys.list(include_revoked=True)}


def _summary(entry: AuditEntry, names: dict[str, str]) -> AuditSummary:
    body = entry.body
    verdicts = body.get("verdicts") or []
    # a quote kag added for a hop of a multi-hop answer is not a model sentence
    verdicts = [v for v in verdicts if isinstance(v, dict) and v.get("action") != "added"]
    # a replaced sentence was the model's, unsupported: its quote is shown instead, and counted apart
    supported = sum(1 for v in verdicts if v.get("action", "kept" if v.get("supported") else "") == "kept")
    replaced = sum(1 for v in verdicts if v.get("action") == "replaced")
    return AuditSummary(
        id=entry.id,
        seq=entry.seq,
        created_at=entry.created_at.isoformat(),
        principal=entry.principal,
        principal_name=names.get(entry.principal),
        collections=list(entry.collections),
        question=entry.question,
        answer=str(body.get("answer", "")),
        abstained=bool(body.get("abstained", False)),
        sentences=len(verdicts),
        supported=supported,
        unsupported=len(verdicts) - supported,
        replaced=replaced,
        citations=len(body.get("citations") or []),
        intact=entry.intact,
        error=entry.error,
    )


def _record(entry: AuditEntry, names: dict[str, str]) -> AuditRecord:
    return AuditRecord(**entry.to_dict(), principal_name=names.get(entry.principal))


def _visible(key: ApiKey, entry: AuditEntry) -> bool:
    if key.all_collections:
        return True
    # collections from the hashed payload; none (or unreadable) means no scoped key may see it
    return entry.readable and bool(entry.collections) and all(key.may_use(c) for c in entry.collections)


def _scope(key: ApiKey, since: datetime | None, until: datetime | None, collection: str | None) -> str | None:
    """The collection filter of a list or export: the one asked for (in the key's scope), else the key's only one."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequestError(f"{name} needs a timezone, e.g. 2026-01-01T00:00:00Z")
    if collection is not None:
        check_collection(key, collection)
    elif not key.all_collections:
        if len(key.collections) != 1:
            raise InvalidRequestError(
                "this key is scoped to several collections: name one with ?collection=",
                hint="its collections: " + ", ".join(key.collections),
            )
        collection = key.collections[0]
    return collection


SinceQ = Annotated[datetime | None, Query(description="Only records at or after this time (with a timezone).")]
UntilQ = Annotated[datetime | None, Query(description="Only records before this time (with a timezone).")]
PrincipalQ = Annotated[str | None, Query(max_length=200, description="Only records of this principal (key id).")]
CollectionQ = Annotated[str | None, Query(max_length=128, description="Only records that searched it.")]


@router.get("", summary="Answer records, newest first, filtered by time, principal and collection")
def list_records(
    request: Request,
    key: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))],
    since: SinceQ = None,
    until: UntilQ = None,
    principal: PrincipalQ = None,
    collection: CollectionQ = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AuditList:
    collection = _scope(key, since, until, collection)
    entries = services(request).audit.list(
        since=since, until=until, principal=principal, collection=collection, limit=limit, offset=offset
    )
    shown = [e for e in entries if _visible(key, e)]
    names = _key_names(request)
    return AuditList(
        records=[_summary(e, names) for e in shown], limit=limit, offset=offset, hidden=len(entries) - len(shown)
    )


@router.get(
    "/export",
    summary="Every record matching the list's filters, as CSV (one row per answer) or JSON (whole records)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
)
def export_records(
    request: Request,
    key: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))],
    fmt: Annotated[
        ExportFormat, Query(alias="format", description="csv: the list's columns; json: whole records.")
    ] = ExportFormat.csv,
    since: SinceQ = None,
    until: UntilQ = None,
    principal: PrincipalQ = None,
    collection: CollectionQ = None,
    limit: Annotated[int, Query(ge=1, le=1_000_000, description="At most this many records.")] = 100_000,
) -> StreamingResponse:
    collection = _scope(key, since, until, collection)
    log = services(request).audit
    names = _key_names(request)
    entries = _visible_entries(log, key, since, until, principal, collection, limit)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"Content-Disposition": f'attachment; filename="kag-audit-{stamp}.{fmt.value}"'}
    if fmt is ExportFormat.json:
        return StreamingResponse(_json_lines(entries, names), media_type="application/json", headers=headers)
    return StreamingResponse(_csv_lines(entries, names), media_type="text/csv; charset=utf-8", headers=headers)


def _visible_entries(
    log: AuditLog,
    key: ApiKey,
    since: datetime | None,
    until: datetime | None,
    principal: str | None,
    collection: str | None,
    limit: int,
) -> Iterator[AuditEntry]:
    """Matching records newest first, a page at a time, only those the key may see."""
    offset, sent = 0, 0
    while sent < limit:
        page = log.list(
            since=since, until=until, principal=principal, collection=collection, limit=_EXPORT_PAGE, offset=offset
        )
        for entry in page:
            if _visible(key, entry):
                yield entry
                sent += 1
                if sent >= limit:
                    return
        if len(page) < _EXPORT_PAGE:
            return
        offset += _EXPORT_PAGE


def _csv_lines(entries: Iterator[AuditEntry], names: dict[str, str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for entry in entries:
        row = _summary(entry, names).model_dump()
        row["collections"] = ";".join(row["collections"])
        writer.writerow([row[c] if row[c] is not None else "" for c in CSV_COLUMNS])
        yield flush()


def _json_lines(entries: Iterator[AuditEntry], names: dict[str, str]) -> Iterator[str]:
    yield "["
    for i, entry in enumerate(entries):
        yield ("," if i else "") + json.dumps(_record(entry, names).model_dump(), ensure_ascii=False)
    yield "]\n"


@router.get("/verify", summary="Recompute the hash chain (and compare its signed checkpoints); the first break")
def verify_chain(request: Request, _: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))]) -> ChainStatus:
    return ChainStatus(**services(request).audit.verify().to_dict())


@router.get("/head", summary="The newest record's hash and the number of records, to keep outside the ledger")
def chain_head(request: Request, _: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))]) -> AuditHeadStatus:
    return AuditHeadStatus(**services(request).audit.head().to_dict())


@router.get("/{record_id}", summary="One answer record: prompt, model, sampling, sources, verdicts, citations")
def get_record(
    record_id: str, request: Request, key: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))]
) -> AuditRecord:
    entry = services(request).audit.get(record_id)
    if not _visible(key, entry):
        raise NotFoundError(f"no audit record with id {record_id}")
    return _record(entry, _key_names(request))
