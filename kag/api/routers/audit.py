"""The audit log over HTTP: list and read answer records, verify the hash chain (admin and auditor keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from kag.api.auth import Action, check_collection, require, services
from kag.api.schemas import AuditList, AuditRecord, AuditSummary, ChainStatus
from kag.audit import canonical_json, chain_hash
from kag.errors import InvalidRequestError, NotFoundError
from kag.keys import ApiKey

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def _summary(entry: Any) -> AuditSummary:
    body = entry.body
    verdicts = body.get("verdicts") or []
    # a replaced sentence was the model's, unsupported: its quote is shown instead, and counted apart
    supported = sum(1 for v in verdicts if v.get("action", "kept" if v.get("supported") else "") == "kept")
    replaced = sum(1 for v in verdicts if v.get("action") == "replaced")
    return AuditSummary(
        id=entry.id,
        seq=entry.seq,
        created_at=entry.created_at.isoformat(),
        principal=entry.principal,
        collections=list(entry.collections),
        question=entry.question,
        answer=str(body.get("answer", "")),
        abstained=bool(body.get("abstained", False)),
        sentences=len(verdicts),
        supported=supported,
        unsupported=len(verdicts) - supported,
        replaced=replaced,
        citations=len(body.get("citations") or []),
    )


def _visible(key: ApiKey, collections: Any) -> bool:
    return key.all_collections or all(key.may_use(c) for c in collections)


@router.get("", summary="Answer records, newest first, filtered by time, principal and collection")
def list_records(
    request: Request,
    key: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))],
    since: datetime | None = None,
    until: datetime | None = None,
    principal: Annotated[str | None, Query(max_length=200)] = None,
    collection: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AuditList:
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
    entries = services(request).audit.list(
        since=since, until=until, principal=principal, collection=collection, limit=limit, offset=offset
    )
    shown = [e for e in entries if _visible(key, e.collections)]
    return AuditList(records=[_summary(e) for e in shown], limit=limit, offset=offset, hidden=len(entries) - len(shown))


@router.get("/verify", summary="Recompute the hash chain and report the first break, if any")
def verify_chain(request: Request, _: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))]) -> ChainStatus:
    return ChainStatus(**services(request).audit.verify().to_dict())


@router.get("/{record_id}", summary="One answer record: prompt, model, sampling, sources, verdicts, citations")
def get_record(
    record_id: str, request: Request, key: Annotated[ApiKey, Depends(require(Action.AUDIT_READ))]
) -> AuditRecord:
    entry = services(request).audit.get(record_id)
    if not _visible(key, entry.collections):
        raise NotFoundError(f"no audit record with id {record_id}")
    intact = chain_hash(entry.prev_hash, canonical_json(entry.body)) == entry.hash
    return AuditRecord(**{k: v for k, v in entry.to_dict().items()}, intact=intact)
