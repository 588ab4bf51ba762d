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
chain from some record on by someone who recomputes every later hash. Two anchors outside the
ledger show both: a head hash kept elsewhere (`AuditLog.head`, `kag audit head`; compare with
`verify(expect_head=...)`), and a file of HMAC-signed checkpoints written as records are appended
(`kag.audit_checkpoints`; `verify` checks them).

What is read back is what was hashed: `AuditEntry` takes principal, collections, question and time
from the payload, never from the columns kept beside it for filtering, and says whether the record
is intact (its hash verifies and the columns agree with the payload). A record whose payload cannot
be read is still listed, marked, so one bad row never hides the others.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from kag.errors import AuditWriteError, InvalidRequestError, NotFoundError, StoreError
from kag.ledger.models import AuditRecordRow

if TYPE_CHECKING:
    from sqlalchemy import Row

    from kag.audit_checkpoints import Checkpoint, CheckpointFile
    from kag.ledger import Ledger

GENESIS_HASH = "0" * 64
REQUIRED_FIELDS = ("principal", "collections", "question")
#: keys the log writes itself; a body that carries them is refused rather than silently overwritten
RESERVED_FIELDS = ("id", "created_at")
#: the `error` of a record whose payload is not a JSON object
UNREADABLE_PAYLOAD = "unreadable payload"

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
    """One stored audit record; `body` is its hashed payload (the given body plus id and created_at).

    principal, collections, question and created_at are read from the payload. `intact` is False when
    the stored hash does not cover the payload or the columns beside it disagree with it; `error` then
    says why. A record whose payload cannot be read has an empty body, the columns' (unverified)
    values, and `error` == UNREADABLE_PAYLOAD."""

    id: str
    seq: int
    created_at: datetime
    principal: str
    collections: tuple[str, ...]
    question: str
    body: dict[str, Any]
    prev_hash: str
    hash: str
    intact: bool = True
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.error != UNREADABLE_PAYLOAD

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
            "intact": self.intact,
            "error": self.error,
            "body": self.body,
        }


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest record of the chain as stored now (not verified): keep `hash` elsewhere to compare later."""

    count: int
    seq: int | None
    id: str | None
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "head_seq": self.seq, "head_id": self.id, "head_hash": self.hash}


class BreakReason(StrEnum):
    """Why `verify` stopped at a record, or why an anchor outside the ledger disagrees with it."""

    HASH_MISMATCH = "hash_mismatch"
    BROKEN_LINK = "broken_link"
    MISSING_RECORD = "missing_record"
    OUT_OF_ORDER = "out_of_order"
    FIELD_MISMATCH = "field_mismatch"
    #: the chain is shorter than a checkpoint says, or lacks the expected head: its newest records are gone
    TRUNCATED = "truncated"
    #: record number `count` of the chain is not the one a checkpoint signed: the chain was rewritten
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    #: a checkpoint line fails its HMAC (or is not a checkpoint): the file was altered
    BAD_CHECKPOINT = "bad_checkpoint"


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first record at which the chain does not hold, and why; `id`/`seq` are None when the problem
    is in the checkpoint file or the chain is empty."""

    id: str | None
    seq: int | None
    reason: BreakReason
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "reason": self.reason.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The result of `AuditLog.verify`: records checked, the last good head, the first break if any,
    and how many signed checkpoints were compared with the chain."""

    checked: int
    head_seq: int | None
    head_hash: str
    broken: ChainBreak | None = None
    checkpoints: int = 0

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
            "checkpoints": self.checkpoints,
        }


# --- the log ------------------------------------------------------------------------------


class AuditLog:
    """Append, read and verify the hash-chained audit records in the ledger."""

    def __init__(self, ledger: Ledger, *, checkpoints: CheckpointFile | None = None, checkpoint_every: int = 1) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._ledger = ledger
        self._engine = ledger.engine
        self.checkpoints = checkpoints
        self._checkpoint_every = checkpoint_every

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
                entry, count = self._append_once(plain)
                break
            except IntegrityError as exc:
                last_error = exc
            except SQLAlchemyError as exc:
                last_error = exc
                raise self._write_error(exc) from exc
        else:
            assert last_error is not None
            raise self._write_error(last_error) from last_error
        if self.checkpoints is not None and count is not None and count % self._checkpoint_every == 0:
            # after the commit, so a checkpoint never vouches for a record that was rolled back
            try:
                self.checkpoints.append(count, entry.seq, entry.hash)
            except StoreError as exc:
                raise AuditWriteError(
                    f"the audit record {entry.id} is stored but its checkpoint is not: {exc.message}",
                    hint="the answer must not be returned without it; fix the file, then `kag audit checkpoint`",
                ) from exc
        return entry

    def _write_error(self, exc: SQLAlchemyError) -> AuditWriteError:
        return AuditWriteError(
            f"cannot write the audit record to the ledger at {self._ledger.safe_url}: {exc.__class__.__name__}: {exc}",
            hint="the answer must not be returned without it; check the database, then `kag audit verify`",
        )

    def _append_once(self, plain: dict[str, Any]) -> tuple[AuditEntry, int | None]:
        """Insert one record; with checkpoints on, also the chain's length counted under the write lock."""
        count: int | None = None
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
            if self.checkpoints is not None:
                count = int(conn.execute(select(func.count()).select_from(_TABLE)).scalar_one())
        entry = AuditEntry(
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
        return entry, count

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

    def head(self) -> AuditHead:
        """The newest record as stored now and the number of records (unverified: `verify` says if they hold)."""
        with self._reading() as conn:
            count = int(conn.execute(select(func.count()).select_from(_TABLE)).scalar() or 0)
            row = conn.execute(
                select(_TABLE.c.id, _TABLE.c.seq, _TABLE.c.hash).order_by(_TABLE.c.seq.desc()).limit(1)
            ).first()
        if row is None:
            return AuditHead(count=0, seq=None, id=None, hash=GENESIS_HASH)
        return AuditHead(count=count, seq=row.seq, id=row.id, hash=row.hash)

    def checkpoint(self) -> Checkpoint:
        """Verify the chain and sign its head into the checkpoint file now; StoreError if it does not hold."""
        if self.checkpoints is None:
            raise InvalidRequestError(
                "no audit checkpoint file is configured",
                hint="set KAG_AUDIT_CHECKPOINT_PATH and KAG_AUDIT_HMAC_KEY",
            )
        # the first checkpoint has no file to compare with yet: the chain alone is verified
        report = self.verify() if self.checkpoints.path.exists() else self._walk(1000, {})
        if report.broken is not None:
            raise StoreError(
                f"the audit chain does not hold, so its head is not signed: {report.broken.detail}",
                hint="run `kag audit verify`",
            )
        return self.checkpoints.append(report.checked, report.head_seq or 0, report.head_hash)

    # --- verifying ------------------------------------------------------------------------
    def verify(
        self,
        *,
        page_size: int = 1000,
        expect_head: str | None = None,
        checkpoints: CheckpointFile | None = None,
    ) -> ChainReport:
        """Walk the chain in `seq` order, a page at a time, and report the first record that does not hold.

        With `expect_head` (a head hash noted earlier) the chain must still contain that record; with
        checkpoints (`checkpoints`, else the log's own file if it has one) every signed line must verify
        and name a record the chain still holds at that position. Both catch a removed tail."""
        source = checkpoints if checkpoints is not None else self.checkpoints
        signed: dict[int, list[Checkpoint]] = {}
        lines = 0
        if source is not None:
            # read before the head is fixed: every line then names a record committed before it
            read = source.read()
            if read.bad:
                bad = read.bad[0]
                return ChainReport(
                    checked=0,
                    head_seq=None,
                    head_hash=GENESIS_HASH,
                    broken=ChainBreak(
                        id=None,
                        seq=None,
                        reason=BreakReason.BAD_CHECKPOINT,
                        detail=f"line {bad.line} of the checkpoint file {read.path} cannot be trusted: {bad.reason}",
                    ),
                    checkpoints=len(read.checkpoints),
                )
            for cp in read.checkpoints:
                signed.setdefault(cp.count, []).append(cp)
            lines = len(read.checkpoints)
        if expect_head is not None:
            expect_head = expect_head.strip().lower()
            if len(expect_head) != 64 or any(ch not in "0123456789abcdef" for ch in expect_head):
                raise InvalidRequestError(
                    f"the expected head {expect_head!r} is not a sha256 hash (64 hex digits)",
                    hint="take it from `kag audit head`",
                )
        report = self._walk(page_size, signed)
        report = dataclasses.replace(report, checkpoints=lines)
        if report.broken is not None:
            return report
        return self._check_tail(report, signed, expect_head)

    def _walk(self, page_size: int, signed: dict[int, builtins.list[Checkpoint]]) -> ChainReport:
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
                if broken is None:
                    broken = _check_signed(row, checked, signed.get(checked, ()))
                if broken is not None:
                    return ChainReport(checked=checked, head_seq=prev_seq, head_hash=prev_hash, broken=broken)
                prev_seq, prev_hash = row.seq, row.hash
            after = rows[-1].seq

    def _check_tail(
        self, report: ChainReport, signed: dict[int, builtins.list[Checkpoint]], expect_head: str | None
    ) -> ChainReport:
        """An intact chain must still reach the longest checkpoint and hold the expected head."""
        last = None if report.head_seq is None else self._id_at(report.head_seq)
        ends = (
            "the chain is empty"
            if last is None
            else f"the chain ends at record {last} (seq {report.head_seq}, record {report.checked})"
        )
        if signed:
            longest = max(signed)
            if longest > report.checked:
                cp = signed[longest][0]
                return dataclasses.replace(
                    report,
                    broken=ChainBreak(
                        id=last,
                        seq=report.head_seq,
                        reason=BreakReason.TRUNCATED,
                        detail=f"{ends}, but checkpoint line {cp.line}, signed {cp.time}, vouches for "
                        f"{cp.count} records with head {cp.head[:16]}…: the newest "
                        f"{cp.count - report.checked} record(s) were removed",
                    ),
                )
        if expect_head is not None and expect_head != GENESIS_HASH and not self._in_chain(expect_head, report):
            return dataclasses.replace(
                report,
                broken=ChainBreak(
                    id=last,
                    seq=report.head_seq,
                    reason=BreakReason.TRUNCATED,
                    detail=f"{ends}, and no record of it has the expected head {expect_head[:16]}…: "
                    "records at its end were removed, or the chain was rewritten",
                ),
            )
        return report

    def _id_at(self, seq: int) -> str | None:
        with self._reading() as conn:
            return conn.execute(select(_TABLE.c.id).where(_TABLE.c.seq == seq)).scalar()

    def _in_chain(self, digest: str, report: ChainReport) -> bool:
        """Whether the verified part of the chain (seq <= its head) holds a record with this hash."""
        found = self._find_by_hash(digest)
        return found is not None and report.head_seq is not None and found[1] <= report.head_seq

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
    """The record as its hashed payload says, marked not intact where the hash or the columns disagree."""
    try:
        body = json.loads(row.payload)
    except (TypeError, ValueError):
        body = None
    if not isinstance(body, dict):
        # nothing hashed can be read: show what the columns say, marked, rather than fail the whole list
        collections = row.collections if isinstance(row.collections, list) else []
        return AuditEntry(
            id=row.id,
            seq=row.seq,
            created_at=_as_utc(row.created_at),
            principal=str(row.principal),
            collections=tuple(str(c) for c in collections),
            question=str(row.question),
            body={},
            prev_hash=row.prev_hash,
            hash=row.hash,
            intact=False,
            error=UNREADABLE_PAYLOAD,
        )

    def broken(reason: BreakReason, detail: str) -> ChainBreak:
        return ChainBreak(id=row.id, seq=row.seq, reason=reason, detail=detail)

    problem: ChainBreak | None
    if chain_hash(row.prev_hash, row.payload) != row.hash:
        problem = broken(BreakReason.HASH_MISMATCH, "its stored hash does not cover its payload")
    else:
        problem = _check_fields(row, broken)
    hashed: Any = body.get("collections")
    if not isinstance(hashed, list) or not all(isinstance(c, str) for c in hashed):
        hashed = []  # no collections: visible to no scoped key
    return AuditEntry(
        id=row.id,
        seq=row.seq,
        created_at=_payload_time(body.get("created_at"), row.created_at),
        principal=str(body.get("principal", "")),
        collections=tuple(hashed),
        question=str(body.get("question", "")),
        body=body,
        prev_hash=row.prev_hash,
        hash=row.hash,
        intact=problem is None,
        error=None if problem is None else problem.detail,
    )


def _payload_time(value: Any, column: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
    return _as_utc(column)


def _check_signed(row: Row[Any], number: int, checkpoints: Sequence[Checkpoint]) -> ChainBreak | None:
    """Whether the chain's record number `number` is the one each checkpoint for that length signed."""
    for cp in checkpoints:
        if cp.head != row.hash:
            return ChainBreak(
                id=row.id,
                seq=row.seq,
                reason=BreakReason.CHECKPOINT_MISMATCH,
                detail=f"checkpoint line {cp.line}, signed {cp.time}, says record {number} of the chain has "
                f"hash {cp.head[:16]}…, but it has {row.hash[:16]}…: the chain was rewritten from here on "
                "or before",
            )
    return None


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
