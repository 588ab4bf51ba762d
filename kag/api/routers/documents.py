"""Collections, documents (upload, list, get, delete) and the ingestion jobs that uploads start."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from kag.api.auth import Action, check_collection, require, services
from kag.api.jobs import SOURCE, job_view
from kag.api.schemas import (
    CollectionCreate,
    CollectionInfo,
    CollectionList,
    DocumentDetail,
    DocumentInfo,
    DocumentList,
    DocumentText,
    JobInfo,
    JobList,
)
from kag.api.services import Services
from kag.errors import (
    ConflictError,
    FileTooLargeError,
    InvalidRequestError,
    NotFoundError,
    UnsupportedFormatError,
)
from kag.keys import ApiKey, check_collection_name
from kag.ledger.models import JobStatus
from kag.units import describe_limit, describe_size

router = APIRouter(prefix="/v1", tags=["collections and documents"])

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _busy(svc: Services, collection: str) -> None:
    if collection in svc.worker.busy_collections():
        raise ConflictError(
            f"the collection {collection} has an ingestion job queued or running",
            hint="wait until its jobs finish (GET /v1/jobs?collection=...), then retry",
            collection=collection,
        )


# --- collections --------------------------------------------------------------------------


@router.get("/collections", summary="Collections this key may use, with counts")
def list_collections(
    request: Request, key: Annotated[ApiKey, Depends(require(Action.COLLECTIONS_READ))]
) -> CollectionList:
    ledger = services(request).runtime.stores.ledger
    rows = [r for r in ledger.collection_rows() if key.may_use(r.name)]
    stats = ledger.collection_stats([r.name for r in rows])
    return CollectionList(
        collections=[
            CollectionInfo(
                name=r.name,
                description=r.description or "",
                created_at=_iso(r.created_at),
                documents=stats[r.name][0],
                chunks=stats[r.name][1],
            )
            for r in rows
        ]
    )


@router.post("/collections", status_code=201, summary="Create a collection")
def create_collection(
    body: CollectionCreate, request: Request, key: Annotated[ApiKey, Depends(require(Action.COLLECTIONS_CREATE))]
) -> CollectionInfo:
    check_collection(key, body.name)
    ledger = services(request).runtime.stores.ledger
    if body.name in ledger.collections():
        raise ConflictError(f"the collection {body.name} exists already", collection=body.name)
    ledger.ensure_collection(body.name, body.description)
    return _collection(services(request), body.name)


def _collection(svc: Services, name: str) -> CollectionInfo:
    ledger = svc.runtime.stores.ledger
    row = next((r for r in ledger.collection_rows() if r.name == name), None)
    if row is None:
        raise NotFoundError(f"no collection named {name}", hint="list them with GET /v1/collections")
    documents, chunks = ledger.collection_stats([name])[name]
    return CollectionInfo(
        name=name,
        description=row.description or "",
        created_at=_iso(row.created_at),
        documents=documents,
        chunks=chunks,
    )


@router.get("/collections/{name}", summary="One collection with counts")
def get_collection(
    name: str, request: Request, key: Annotated[ApiKey, Depends(require(Action.COLLECTIONS_READ))]
) -> CollectionInfo:
    check_collection(key, name)
    return _collection(services(request), name)


@router.delete("/collections/{name}", summary="Delete a collection and every trace of it from every store")
def delete_collection(
    name: str, request: Request, key: Annotated[ApiKey, Depends(require(Action.COLLECTIONS_DELETE))]
) -> CollectionInfo:
    svc = services(request)
    check_collection(key, name, svc.known_collections())
    _busy(svc, name)
    info = _collection(svc, name)
    svc.runtime.ingestor.delete_collection(name)  # Qdrant, Tantivy, then ledger (chunks, graph, documents)
    svc.runtime.stores.ledger.delete_jobs(name)
    shutil.rmtree(svc.worker.collection_dir(name), ignore_errors=True)
    svc.collection_written(name)
    return info


# --- uploads and jobs -------------------------------------------------------------------


def _safe_name(raw: str | None) -> str:
    """The file name of an upload without any directory part; InvalidRequestError if nothing usable is left."""
    if not raw:
        raise InvalidRequestError("an uploaded file has no file name", hint="send each file with a filename")
    name = PureWindowsPath(PurePosixPath(raw).name).name.strip()
    if not name or name in {".", ".."} or name.startswith(".") or any(ord(ch) < 32 for ch in name) or len(name) > 255:
        raise InvalidRequestError(f"unusable file name {raw!r}", hint="use a plain name such as report.pdf")
    return name


@router.post(
    "/collections/{name}/documents",
    status_code=202,
    summary="Upload files; they are ingested by a background job",
    responses={413: {"description": "Upload or file over its limit"}, 415: {"description": "Unsupported file type"}},
)
async def upload_documents(
    name: str,
    request: Request,
    response: Response,
    key: Annotated[ApiKey, Depends(require(Action.DOCUMENTS_WRITE))],
    files: Annotated[
        list[UploadFile],
        File(description="One or more documents (.txt .md .html .pdf .docx .xlsx .pptx .csv .eml .json .jsonl)"),
    ],
) -> JobInfo:
    svc = services(request)
    check_collection_name(name)
    check_collection(key, name)
    if len(files) > svc.settings.api_upload_max_files:
        raise InvalidRequestError(
            f"{len(files)} files in one upload, over the limit of {svc.settings.api_upload_max_files}",
            hint="split the upload, or raise KAG_API_UPLOAD_MAX_FILES",
        )
    registry = _registry(svc)
    max_bytes = svc.settings.max_file_bytes
    names: list[str] = []
    for upload in files:
        file_name = _safe_name(upload.filename)
        try:
            registry.for_path(file_name)
        except UnsupportedFormatError as exc:
            raise UnsupportedFormatError(exc.message, hint=exc.hint, file=file_name) from None
        size = upload.size if upload.size is not None else 0
        if size > max_bytes:
            raise FileTooLargeError(
                f"{file_name} is {describe_size(size)}, over the {describe_limit(max_bytes)} limit per file",
                hint="raise KAG_MAX_FILE_SIZE_MB to ingest it",
                file=file_name,
            )
        if file_name in names:
            raise InvalidRequestError(f"the file name {file_name} appears twice in this upload", file=file_name)
        names.append(file_name)
    svc.worker.check_capacity()  # 503 before anything is written
    job_id = f"j_{uuid.uuid4().hex}"
    staging = svc.worker.staging_dir(job_id)

    def stage() -> None:
        staging.mkdir(parents=True, exist_ok=True)
        for upload, file_name in zip(files, names, strict=True):
            upload.file.seek(0)
            with open(staging / file_name, "wb") as out:
                shutil.copyfileobj(upload.file, out, 1024 * 1024)
        ledger = svc.runtime.stores.ledger
        ledger.ensure_collection(name)
        ledger.queue_job(job_id, name, {"source": SOURCE, "files": names, "principal": key.id})

    try:
        await run_in_threadpool(stage)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    svc.worker.submit(job_id, name)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    row, errors = svc.runtime.stores.ledger.get_job(job_id)
    return JobInfo(**job_view(row, errors, svc.worker, _graph_counts(svc, [job_id])[job_id]))


def _graph_counts(svc: Services, job_ids: list[str]) -> dict[str, dict[str, int]]:
    return svc.runtime.stores.ledger.graph_counts_by_job(job_ids)


def _registry(svc: Services) -> Any:
    return svc.runtime.ingestor.preparer.registry


@router.get("/jobs", summary="Recent ingestion jobs of the key's collections")
def list_jobs(
    request: Request,
    key: Annotated[ApiKey, Depends(require(Action.JOBS_READ))],
    collection: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> JobList:
    svc = services(request)
    if collection is not None:
        check_collection(key, collection)
        scope: list[str] | None = [collection]
    else:
        scope = None if key.all_collections else list(key.collections)
    rows = svc.runtime.stores.ledger.jobs(limit, collections=scope, offset=offset)
    graphs = _graph_counts(svc, [r.id for r in rows])
    return JobList(jobs=[JobInfo(**job_view(r, [], svc.worker, graphs[r.id])) for r in rows])


@router.get("/jobs/{job_id}", summary="One ingestion job: progress, counts and per-file errors")
def get_job(job_id: str, request: Request, key: Annotated[ApiKey, Depends(require(Action.JOBS_READ))]) -> JobInfo:
    svc = services(request)
    row, errors = svc.runtime.stores.ledger.get_job(job_id)
    if not key.may_use(row.collection):
        raise NotFoundError(f"no ingest job with id {job_id}")
    return JobInfo(**job_view(row, errors, svc.worker, _graph_counts(svc, [job_id])[job_id]))


# --- documents ----------------------------------------------------------------------------


def _document_info(row: Any, svc: Services) -> dict[str, Any]:
    return {
        "id": row.id,
        "collection": row.collection,
        "title": row.title,
        "version": row.version,
        "status": row.status,
        "mime_type": row.mime_type,
        "source_uri": row.shown_source_uri(svc.settings.source_uri == "absolute"),
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "metadata": {k: v for k, v in (row.meta or {}).items() if not k.startswith("_kag")},
    }


@router.get("/documents", summary="Documents of the key's collections")
def list_documents(
    request: Request,
    key: Annotated[ApiKey, Depends(require(Action.DOCUMENTS_READ))],
    collection: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DocumentList:
    svc = services(request)
    known = svc.known_collections()
    if collection is not None:
        check_collection(key, collection, known)
        scope = [collection]
    else:
        scope = key.scope(known)
    rows, total = svc.runtime.stores.ledger.document_page(scope, limit=limit, offset=offset)
    return DocumentList(
        documents=[DocumentInfo(**_document_info(r, svc)) for r in rows], total=total, limit=limit, offset=offset
    )


def _readable_document(svc: Services, key: ApiKey, document_id: str) -> Any:
    row = svc.runtime.stores.ledger.get_document(document_id)
    if not key.may_use(row.collection):  # outside the scope a document does not exist
        raise NotFoundError(f"no document with id {document_id}", hint="list documents with GET /v1/documents")
    return row


@router.get("/documents/{document_id}", summary="One document with its chunks (and text on request)")
def get_document(
    document_id: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require(Action.DOCUMENTS_READ))],
    include_text: bool = False,
) -> DocumentDetail:
    svc = services(request)
    row = _readable_document(svc, key, document_id)
    chunks = svc.runtime.stores.ledger.chunks_of(document_id)
    return DocumentDetail(
        **_document_info(row, svc),
        text=row.text if include_text else None,
        chunks=[
            {
                "id": c.id,
                "ordinal": c.ordinal,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "page": c.page,
                "heading_path": list(c.heading_path or []),
                "token_count": c.token_count,
                "text": c.text,
            }
            for c in chunks
        ],
    )


@router.get("/documents/{document_id}/text", summary="A span of a document's text, by character offsets")
def get_document_text(
    document_id: str,
    request: Request,
    key: Annotated[ApiKey, Depends(require(Action.DOCUMENTS_READ))],
    start: Annotated[int, Query(ge=0)] = 0,
    end: Annotated[int | None, Query(ge=0)] = None,
) -> DocumentText:
    row = _readable_document(services(request), key, document_id)
    length = len(row.text)
    stop = length if end is None else min(end, length)
    if start > stop:
        raise InvalidRequestError(f"start ({start}) is after end ({stop}); the document has {length} characters")
    return DocumentText(
        document_id=row.id, version=row.version, length=length, start=start, end=stop, text=row.text[start:stop]
    )


@router.delete("/documents/{document_id}", summary="Delete a document from every store")
def delete_document(
    document_id: str, request: Request, key: Annotated[ApiKey, Depends(require(Action.DOCUMENTS_WRITE))]
) -> DocumentInfo:
    svc = services(request)
    row = _readable_document(svc, key, document_id)
    _busy(svc, row.collection)
    info = DocumentInfo(**_document_info(row, svc))
    svc.runtime.ingestor.delete_document(document_id)
    uploads = svc.worker.collection_dir(row.collection).resolve()
    source = Path(row.source_uri)
    if source.parent == uploads:  # an uploaded copy goes too; files ingested from elsewhere are not ours
        source.unlink(missing_ok=True)
    svc.collection_written(row.collection)
    return info
