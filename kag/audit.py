"""The audit log: one tamper-evident, hash-chained ledger record per answer.

The answer pipeline appends one record per answer, before it returns the answer. The record body
is a JSON object; the log requires only ``principal`` (non-empty str), ``collections`` (list of
str) and ``question`` (str) and stores everything else as given. The pipeline passes::

    principal    who asked: API key id or user name
    collections  the collections the question was searched in (its access filter)
    question     the question as asked
    retrieval    per retriever ("dense", "lexical", "graph"): [{"chunk_id", "score"}, ...];
                 "fused" and "reranked": the same shape, in rank order
    prompt       the exact text sent to the model
    model        {"path", "sha256"} of the model file
    sampling     temperature, top_p, max_tokens, seed, ...
    raw_output   the model's output before verification
    answer       the final answer text
    citations    [{"source", "document_id", "chunk_id", "title", "page", "pages", "char_start",
                   "char_end", "quote"}, ...]
    verdicts     per sentence: the verdict, its evidence span and score
    timings_ms   per stage: retrieve, rerank, generate, verify, total

The log adds ``id`` (``a_`` + 32 hex) and ``created_at`` (ISO-8601 UTC) to the body; ``payload`` is
the canonical JSON of that object (see `canonical_json`), and a record's
``hash = sha256(prev_hash + payload)``, where ``prev_hash`` is the hash of the record before it in
``seq`` order (64 zeros for the first). `AuditLog.verify` recomputes every hash and link, so a
change to any stored field, a deleted record, an inserted record and reordered records are all
found. What a chain alone cannot show is the loss of its newest records, or a rewrite of the
chain from some record on by someone who recomputes every later hash: keep
`ChainReport.head_hash` somewhere else (a ticket, a log shipper) and compare it later.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kag.errors import AuditWriteError, NotFoundError, StoreError
from kag.ledger.models import AuditRecordRow

if TYPE_CHECKING:
    from sqlalchemy import Row

    from kag.ledger import Ledger

GENESIS_HASH = "0" * 64
REQUIRED_FIELDS = ("principal", "collections", "question")
#: keys the log writes itself; a body that carries them is refused rather than silently overwritten
RESERVED_FIELDS = ("id", "created_at")

# the key of the PostgreSQL advisory lock that serializes appends ("kag_audi" as a 64-bit int);
# every process that writes the audit log takes the same one
_PG_LOCK_KEY = 0x6B61675F61756469
# appends retry on a unique-constraint conflict, which only a writer that skips the lock can cause
_APPEND_ATTEMPTS = 3
_TABLE = cast(Table, AuditRecordRow.__table__)


# --- canonical JSON -----------------------------------------------------------------------


def _iso(value: datetime) -> str:
    """An aware datetime as ISO-8601 UTC with microseconds, e.g. `2026-11-23T09:00:00.000000Z`."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _plain(value: Any, path: str) -> Any:
    """`value` as JSON types only (dict, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}: NaN and infinity have no JSON form and cannot be audited")
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            # a naive time could be any zone; an audit record must not guess which
            raise ValueError(f"{path} is a naive datetime: give it a timezone (e.g. datetime.now(UTC))")
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), path)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                # json.dumps would turn 1 into "1", so the stored record would not read back as written
                raise TypeError(f"{path} has the key {key!r}: audit record keys must be strings")
            out[key] = _plain(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"{path} is a {type(value).__name__}, which has no canonical JSON form: "
        "pass dicts, lists, tuples, str, int, float, bool, None, datetimes or dataclasses"
    )


def canonical_json(obj: Any) -> str:
    """The one JSON text of `obj`: sorted keys, no spaces, UTF-8; ValueError on NaN/inf, TypeError on other types."""
    return json.dumps(_plain(obj, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(prev_hash: str, payload: str) -> str:
    """The hash of a record: sha256 over its predecessor's hash followed by its payload."""
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


def _collections_key(collections: list[str]) -> str:
    # percent-encoding ',' (and '%') keeps every name one exact ",name," token for LIKE
    parts = [c.replace("%", "%25").replace(",", "%2C") for c in collections]
    return "," + "".join(f"{p}," for p in parts)


def _as_utc(value: datetime) -> datetime:
    # SQLite gives back naive datetimes; the log always writes UTC, and filters take naive as UTC
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored audit record; `body` is its hashed payload (the given body plus id and created_at)."""

    id: str
    seq: int
    created_at: datetime
    principal: str
    collections: tuple[str, ...]
    question: str
    body: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "created_at": _iso(self.created_at),
            "principal": self.principal,
            "collections": list(self.collections),
            "question": self.question,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "body": self.body,
        }


class BreakReason(StrEnum):
    """Why `verify` stopped at a record."""

    HASH_MISMATCH = "hash_mismatch"
    BROKEN_LINK = "broken_link"
    MISSING_RECORD = "missing_record"
    OUT_OF_ORDER = "out_of_order"
    FIELD_MISMATCH = "field_mismatch"


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first record at which the chain does not hold, and why."""

    id: str
    seq: int
    reason: BreakReason
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "reason": self.reason.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of `AuditLog.verify`: records checked, the last good head, the first break if any."""

    checked: int
    head_seq: int | None
    head_hash: str
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "broken": self.broken.to_dict() if self.broken else None,
        }


# --- the log ------------------------------------------------------------------------------


class AuditLog:
    """Append, read and verify the hash-chained audit records in the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._engine = ledger.engine

    # --- writing --------------------------------------------------------------------------
    def append(self, body: Mapping[str, Any]) -> AuditEntry:
        """Write one record at the head of the chain; AuditWriteError if it is not stored."""
        try:
            plain = _validated_body(body)
        except (TypeError, ValueError) as exc:
            raise AuditWriteError(
                f"cannot write the audit record: {exc}", hint="the answer must not be returned without it"
            ) from exc
        last_error: SQLAlchemyError | None = None
        for _ in range(_APPEND_ATTEMPTS):
            try:
                return self._append_once(plain)
            except IntegrityError as exc:
                last_error = exc
            except SQLAlchemyError as exc:
                last_error = exc
                break
        raise AuditWriteError(
            f"cannot write the audit record to the ledger at {self._ledger.safe_url}: "
            f"{last_error.__class__.__name__}: {last_error}",
            hint="the answer must not be returned without it; check the database, then `kag audit verify`",
        ) from last_error

    def _append_once(self, plain: dict[str, Any]) -> AuditEntry:
        with self._write_transaction() as conn:
            # the head is read under the write lock, so no other writer can chain onto it too
            last = conn.execute(select(_TABLE.c.hash).order_by(_TABLE.c.seq.desc()).limit(1)).scalar()
            prev_hash = last or GENESIS_HASH
            record_id = f"a_{uuid.uuid4().hex}"
            created_at = datetime.now(UTC)
            record = {**plain, "id": record_id, "created_at": _iso(created_at)}
            payload = canonical_json(record)
            digest = chain_hash(prev_hash, payload)
            seq = conn.execute(
                insert(_TABLE)
                .values(
                    id=record_id,
                    created_at=created_at,
                    principal=plain["principal"],
                    collections=plain["collections"],
                    collections_key=_collections_key(plain["collections"]),
                    question=plain["question"],
                    payload=payload,
                    prev_hash=prev_hash,
                    hash=digest,
                )
                .returning(_TABLE.c.seq)
            ).scalar_one()
        return AuditEntry(
            id=record_id,
            seq=seq,
            created_at=created_at,
            principal=plain["principal"],
            collections=tuple(plain["collections"]),
            question=plain["question"],
            body=record,
            prev_hash=prev_hash,
            hash=digest,
        )

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        """A transaction that holds the audit log's write lock from its first statement to commit."""
        with self._engine.connect() as conn:
            dialect = conn.dialect.name
            if dialect == "postgresql":
                # READ COMMITTED: each statement after the lock sees what the previous holder committed
                conn.execution_options(isolation_level="READ COMMITTED")
                with conn.begin():
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                    yield conn
            elif dialect == "sqlite":
                with conn.begin():
                    # pysqlite begins a transaction only at the first write, so the read of the head
                    # would run unlocked; BEGIN IMMEDIATE takes SQLite's write lock before it
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    yield conn
            else:
                # no lock for other databases: the unique prev_hash refuses a fork and append retries
                with conn.begin():
                    yield conn

    # --- reading --------------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot read the audit log at {self._ledger.safe_url}: {exc.__class__.__name__}: {exc}",
                hint="check KAG_DATABASE_URL and that the database is reachable",
            ) from exc

    def get(self, record_id: str) -> AuditEntry:
        """The record with this id; NotFoundError if there is none."""
        with self._reading() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.id == record_id)).first()
        if row is None:
            raise NotFoundError(f"no audit record with id {record_id}", hint="list records with `kag audit list`")
        return _entry(row)

    def list(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        principal: str | None = None,
        collection: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[AuditEntry]:
        """Records newest first, filtered by time (`since` <= created_at < `until`), principal and collection."""
        query = select(_TABLE)
        if since is not None:
            query = query.where(_TABLE.c.created_at >= _as_utc(since))
        if until is not None:
            query = query.where(_TABLE.c.created_at < _as_utc(until))
        if principal is not None:
            query = query.where(_TABLE.c.principal == principal)
        if collection is not None:
            token = _collections_key([collection])
            query = query.where(_TABLE.c.collections_key.contains(token, autoescape=True))
        query = query.order_by(_TABLE.c.seq.desc()).limit(limit).offset(offset)
        with self._reading() as conn:
            rows = conn.execute(query).all()
        return [_entry(row) for row in rows]

    def check_record(self, record_id: str) -> ChainBreak | None:
        """Whether one record is intact on its own (its hash covers its payload, its columns match it);
        `verify` checks the links between records as well."""
        with self._reading() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.id == record_id)).first()
        if row is None:
            raise NotFoundError(f"no audit record with id {record_id}", hint="list records with `kag audit list`")

        def broken(reason: BreakReason, detail: str) -> ChainBreak:
            return ChainBreak(id=row.id, seq=row.seq, reason=reason, detail=detail)

        if chain_hash(row.prev_hash, row.payload) != row.hash:
            return broken(
                BreakReason.HASH_MISMATCH,
                "its stored hash is not sha256(prev_hash + payload): its payload or its hash was altered",
            )
        return _check_fields(row, broken)

    def count(self) -> int:
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(_TABLE)).scalar() or 0)

    # --- verifying ------------------------------------------------------------------------
    def verify(self, *, page_size: int = 1000) -> ChainReport:
        """Walk the chain in `seq` order, a page at a time, and report the first record that does not hold."""
        with self._reading() as conn:
            # records appended while verify runs are left for the next run, so it always ends
            head = conn.execute(select(func.max(_TABLE.c.seq))).scalar()
        checked, prev_seq, prev_hash = 0, None, GENESIS_HASH
        if head is None:
            return ChainReport(checked=0, head_seq=None, head_hash=GENESIS_HASH)
        after: int | None = None
        while True:
            query = select(_TABLE).where(_TABLE.c.seq <= head).order_by(_TABLE.c.seq).limit(page_size)
            if after is not None:
                query = query.where(_TABLE.c.seq > after)
            with self._reading() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return ChainReport(checked=checked, head_seq=prev_seq, head_hash=prev_hash)
            for row in rows:
                checked += 1
                broken = _check_record(row, prev_seq, prev_hash, self._find_by_hash)
                if broken is not None:
                    return ChainReport(checked=checked, head_seq=prev_seq, head_hash=prev_hash, broken=broken)
                prev_seq, prev_hash = row.seq, row.hash
            after = rows[-1].seq

    def _find_by_hash(self, digest: str) -> tuple[str, int] | None:
        with self._reading() as conn:
            row = conn.execute(select(_TABLE.c.id, _TABLE.c.seq).where(_TABLE.c.hash == digest)).first()
        return None if row is None else (row.id, row.seq)


def _validated_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as plain JSON types, with its required fields checked."""
    if not isinstance(body, Mapping):
        raise TypeError(f"the audit record body must be a mapping, not {type(body).__name__}")
    reserved = [k for k in RESERVED_FIELDS if k in body]
    if reserved:
        raise ValueError(f"the body must not set {', '.join(reserved)}: the audit log assigns them")
    missing = [k for k in REQUIRED_FIELDS if k not in body]
    if missing:
        raise ValueError(f"the body lacks the required field(s) {', '.join(missing)}")
    plain = _plain(body, "$")
    if not isinstance(plain["principal"], str) or not plain["principal"]:
        raise ValueError("principal must be a non-empty string")
    if not isinstance(plain["question"], str):
        raise ValueError("question must be a string")
    collections = plain["collections"]
    if not isinstance(collections, list) or not all(isinstance(c, str) for c in collections):
        raise ValueError("collections must be a list of collection names")
    return plain


def _entry(row: Row[Any]) -> AuditEntry:
    try:
        body = json.loads(row.payload)
    except ValueError as exc:
        raise StoreError(
            f"audit record {row.id} (seq {row.seq}) has an unreadable payload",
            hint="the log was altered; run `kag audit verify`",
        ) from exc
    return AuditEntry(
        id=row.id,
        seq=row.seq,
        created_at=_as_utc(row.created_at),
        principal=row.principal,
        collections=tuple(row.collections),
        question=row.question,
        body=body,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _check_record(
    row: Row[Any],
    prev_seq: int | None,
    expected_prev: str,
    find_by_hash: Callable[[str], tuple[str, int] | None],
) -> ChainBreak | None:
    """Why `row` breaks the chain after the record (`prev_seq`, `expected_prev`), or None if it holds."""

    def broken(reason: BreakReason, detail: str) -> ChainBreak:
        return ChainBreak(id=row.id, seq=row.seq, reason=reason, detail=detail)

    self_ok = chain_hash(row.prev_hash, row.payload) == row.hash
    link_ok = row.prev_hash == expected_prev
    before = "the start of the chain" if prev_seq is None else f"the record before it (seq {prev_seq})"
    if not link_ok and not self_ok:
        return broken(
            BreakReason.BROKEN_LINK,
            f"its prev_hash does not match the hash of {before} and its own hash does not verify: "
            "its prev_hash was altered",
        )
    if not self_ok:
        return broken(
            BreakReason.HASH_MISMATCH,
            "its stored hash is not sha256(prev_hash + payload): its payload or its hash was altered",
        )
    if not link_ok:
        # the record itself is intact, so its prev_hash is the one it was written with: find that record
        if row.prev_hash == GENESIS_HASH:
            return broken(
                BreakReason.OUT_OF_ORDER,
                f"it was written as the first record of the chain but comes after {before}: records were reordered",
            )
        target = find_by_hash(row.prev_hash)
        if target is None:
            return broken(
                BreakReason.MISSING_RECORD,
                f"the record it was chained to (hash {row.prev_hash[:16]}…) is gone: a record before it was deleted",
            )
        target_id, target_seq = target
        if target_seq > row.seq:
            return broken(
                BreakReason.OUT_OF_ORDER,
                f"it was chained to record {target_id}, which now comes after it (seq {target_seq}): "
                "records were reordered",
            )
        return broken(
            BreakReason.BROKEN_LINK,
            f"it was chained to record {target_id} (seq {target_seq}), not to {before}: "
            "a record was inserted before it or records were reordered",
        )
    return _check_fields(row, broken)


def _check_fields(row: Row[Any], broken: Callable[[BreakReason, str], ChainBreak]) -> ChainBreak | None:
    """The columns kept beside the payload for filtering must say what the hashed payload says."""
    try:
        body = json.loads(row.payload)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return broken(BreakReason.FIELD_MISMATCH, "its payload is not a JSON object")
    stored = {
        "id": row.id,
        "created_at": _iso(_as_utc(row.created_at)),
        "principal": row.principal,
        "collections": list(row.collections) if isinstance(row.collections, list) else row.collections,
        "question": row.question,
    }
    for name, value in stored.items():
        if body.get(name) != value:
            return broken(BreakReason.FIELD_MISMATCH, f"its stored {name} differs from the hashed payload")
    collections = body.get("collections")
    if not isinstance(collections, list) or row.collections_key != _collections_key(collections):
        return broken(BreakReason.FIELD_MISMATCH, "its stored collections_key differs from the hashed payload")
    return None
