"""The hash-chained audit log on SQLite and PostgreSQL: chaining, tamper detection, concurrency, filters."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, select, text, update

from kag.audit import GENESIS_HASH, AuditEntry, AuditLog, BreakReason, canonical_json
from kag.errors import AuditWriteError, NotFoundError, StoreError
from kag.ledger import Ledger
from kag.ledger.models import AuditRecordRow


def body(n: int, principal: str = "alice", collections: tuple[str, ...] = ("hr",)) -> dict[str, object]:
    return {
        "principal": principal,
        "collections": list(collections),
        "question": f"question {n}?",
        "retrieval": {"dense": [{"chunk_id": f"c{n}", "score": 0.5 + n / 10}], "fused": [], "reranked": []},
        "prompt": f"Answer from the sources.\n[1] text {n}",
        "model": {"path": "/models/smollm2.gguf", "sha256": "ab" * 32},
        "sampling": {"temperature": 0.0, "max_tokens": 256},
        "answer": f"answer {n} [1]",
        "timings_ms": {"retrieve": 1.5, "generate": 20.25},
    }


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    led = Ledger(ledger_url)
    yield led
    led.close()


@pytest.fixture
def log(ledger: Ledger) -> AuditLog:
    return AuditLog(ledger)


def chain(log: AuditLog, n: int = 5) -> list[AuditEntry]:
    return [log.append(body(i)) for i in range(n)]


def one_byte_changed(value: str) -> str:
    i = len(value) // 2
    replacement = "1" if value[i] == "0" else "0"
    return value[:i] + replacement + value[i + 1 :]


# --- chaining -----------------------------------------------------------------------------


def test_chain_of_five_verifies_and_links(log: AuditLog) -> None:
    entries = chain(log)
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.prev_hash == before.hash and after.seq > before.seq
    for e in entries:
        expected = hashlib.sha256((e.prev_hash + canonical_json(e.body)).encode()).hexdigest()
        assert e.hash == expected
        assert e.body["id"] == e.id and e.body["created_at"].endswith("Z")
        assert log.get(e.id) == e
    report = log.verify(page_size=2)
    assert report.ok and report.checked == 5
    assert report.head_seq == entries[-1].seq and report.head_hash == entries[-1].hash


def test_empty_log_verifies(log: AuditLog) -> None:
    report = log.verify()
    assert report.ok and report.checked == 0 and report.head_hash == GENESIS_HASH


def test_get_unknown_id_is_not_found(log: AuditLog) -> None:
    with pytest.raises(NotFoundError):
        log.get("a_missing")


# --- tampering ----------------------------------------------------------------------------

EXPECTED_REASON = {
    "payload": BreakReason.HASH_MISMATCH,
    "hash": BreakReason.HASH_MISMATCH,
    "prev_hash": BreakReason.BROKEN_LINK,
    "principal": BreakReason.FIELD_MISMATCH,
    "question": BreakReason.FIELD_MISMATCH,
}


@pytest.mark.parametrize("k", [0, 2, 4])
@pytest.mark.parametrize("field", list(EXPECTED_REASON))
def test_one_changed_byte_in_any_field_breaks_the_chain_at_that_record(
    ledger: Ledger, log: AuditLog, field: str, k: int
) -> None:
    entries = chain(log)
    target = entries[k]
    column = getattr(AuditRecordRow, field)
    with ledger.engine.begin() as conn:
        value = conn.execute(select(column).where(AuditRecordRow.seq == target.seq)).scalar_one()
        conn.execute(
            update(AuditRecordRow).where(AuditRecordRow.seq == target.seq).values({field: one_byte_changed(value)})
        )
    report = log.verify(page_size=2)
    assert not report.ok and report.broken is not None
    assert (report.broken.id, report.broken.seq) == (target.id, target.seq)
    assert report.broken.reason is EXPECTED_REASON[field]
    assert report.checked == k + 1
    assert report.head_seq == (entries[k - 1].seq if k else None)


def test_changed_collections_column_is_detected(ledger: Ledger, log: AuditLog) -> None:
    entries = chain(log)
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == entries[1].seq).values(collections=["legal"]))
    report = log.verify()
    assert report.broken is not None and report.broken.id == entries[1].id
    assert report.broken.reason is BreakReason.FIELD_MISMATCH


@pytest.mark.parametrize("k", [0, 2])
def test_deleted_record_is_detected_at_its_successor(ledger: Ledger, log: AuditLog, k: int) -> None:
    entries = chain(log)
    with ledger.engine.begin() as conn:
        conn.execute(delete(AuditRecordRow).where(AuditRecordRow.seq == entries[k].seq))
    report = log.verify(page_size=2)
    assert report.broken is not None
    assert (report.broken.id, report.broken.seq) == (entries[k + 1].id, entries[k + 1].seq)
    assert report.broken.reason is BreakReason.MISSING_RECORD
    assert "deleted" in report.broken.detail


def test_reordered_records_are_detected(ledger: Ledger, log: AuditLog) -> None:
    entries = chain(log)
    a, b = entries[1], entries[2]
    with ledger.engine.begin() as conn:
        table = AuditRecordRow.__table__
        conn.execute(update(table).where(table.c.seq == a.seq).values(seq=-1))
        conn.execute(update(table).where(table.c.seq == b.seq).values(seq=a.seq))
        conn.execute(update(table).where(table.c.seq == -1).values(seq=b.seq))
    report = log.verify()
    assert report.broken is not None
    assert (report.broken.id, report.broken.seq) == (b.id, a.seq)
    assert report.broken.reason is BreakReason.OUT_OF_ORDER


def test_the_database_refuses_a_fork(ledger: Ledger, log: AuditLog) -> None:
    first = log.append(body(0))
    with pytest.raises(Exception, match="(?i)unique"), ledger.engine.begin() as conn:
        conn.execute(
            AuditRecordRow.__table__.insert().values(
                id="a_fork",
                created_at=datetime.now(UTC),
                principal="mallory",
                collections=[],
                collections_key=",",
                question="",
                payload="{}",
                prev_hash=first.prev_hash,
                hash="f" * 64,
            )
        )


# --- concurrency --------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["ledger-per-thread", "shared-log"])
def test_concurrent_appends_make_one_unbroken_chain(ledger_url: str, shared: bool) -> None:
    threads_n, per_thread = 8, 15
    # open (and migrate) every ledger before the race: only the appends should run concurrently
    ledgers = [Ledger(ledger_url) for _ in range(1 if shared else threads_n)]
    logs = [AuditLog(led) for led in ledgers]
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []
    written: list[AuditEntry] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        log = logs[0 if shared else t]
        barrier.wait()
        try:
            for i in range(per_thread):
                entry = log.append(body(i, principal=f"user{t}"))
                with lock:
                    written.append(entry)
        except BaseException as exc:  # surfaced by the assertion below, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    try:
        assert errors == []
        report = logs[0].verify(page_size=7)
        assert report.ok, report.broken
        assert report.checked == threads_n * per_thread == len(written)
        by_seq = sorted(written, key=lambda e: e.seq)
        assert by_seq[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(by_seq, by_seq[1:], strict=False))
    finally:
        for led in ledgers:
            led.close()


# --- failures -----------------------------------------------------------------------------


def test_failed_write_raises_audit_write_error(ledger: Ledger, log: AuditLog) -> None:
    log.append(body(0))
    with ledger.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_records"))
    with pytest.raises(AuditWriteError) as info:
        log.append(body(1))
    assert isinstance(info.value, StoreError) and info.value.code == "audit_write_failed"
    assert "must not be returned" in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"collections": ["hr"], "question": "q"},
        {"principal": "", "collections": ["hr"], "question": "q"},
        {"principal": "a", "collections": "hr", "question": "q"},
        {"principal": "a", "collections": ["hr"], "question": "q", "id": "mine"},
        {"principal": "a", "collections": ["hr"], "question": "q", "score": float("nan")},
        {"principal": "a", "collections": ["hr"], "question": "q", "when": datetime(2026, 1, 1)},
        {"principal": "a", "collections": ["hr"], "question": "q", "ids": {1, 2}},
    ],
    ids=["no-principal", "empty-principal", "collections-str", "reserved-id", "nan", "naive-time", "set"],
)
def test_invalid_body_raises_audit_write_error_and_writes_nothing(log: AuditLog, bad: dict[str, object]) -> None:
    with pytest.raises(AuditWriteError):
        log.append(bad)
    assert log.count() == 0


# --- listing ------------------------------------------------------------------------------


def test_list_filters_by_principal_collection_and_time_with_pagination(log: AuditLog) -> None:
    specs = [
        ("alice", ("hr",)),
        ("bob", ("legal", "hr")),
        ("alice", ("my_docs",)),
        ("bob", ("a,b",)),
        ("carol", ("100%",)),
        ("alice", ("legal",)),
    ]
    entries = []
    for i, (principal, collections) in enumerate(specs):
        entries.append(log.append(body(i, principal=principal, collections=collections)))
        time.sleep(0.002)  # distinct created_at for the time-window checks
    ids = [e.id for e in entries]

    assert [e.id for e in log.list()] == ids[::-1]
    assert [e.id for e in log.list(principal="alice")] == [ids[5], ids[2], ids[0]]
    assert [e.id for e in log.list(collection="hr")] == [ids[1], ids[0]]
    assert [e.id for e in log.list(collection="legal", principal="bob")] == [ids[1]]
    # LIKE wildcards and separators in names match only themselves
    assert [e.id for e in log.list(collection="my_docs")] == [ids[2]]
    assert log.list(collection="myXdocs") == [] and log.list(collection="a") == []
    assert [e.id for e in log.list(collection="a,b")] == [ids[3]]
    assert [e.id for e in log.list(collection="100%")] == [ids[4]]
    assert log.list(collection="100") == []

    since, until = entries[2].created_at, entries[4].created_at
    assert [e.id for e in log.list(since=since, until=until)] == [ids[3], ids[2]]
    plus_two = timezone(timedelta(hours=2))
    assert [e.id for e in log.list(since=since.astimezone(plus_two))] == ids[2:][::-1]
    assert [e.id for e in log.list(since=since.replace(tzinfo=None))] == ids[2:][::-1]
    assert [e.id for e in log.list(until=since)] == [ids[1], ids[0]]

    pages = [log.list(limit=4, offset=offset) for offset in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 2, 0]
    assert [e.id for p in pages for e in p] == ids[::-1]
    assert log.list(principal="alice", limit=1, offset=1)[0].id == ids[2]


# --- canonical JSON -----------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    chunk_id: str
    score: float
    span: tuple[int, int]


def test_canonical_json_is_stable_across_dict_order_and_converts_types() -> None:
    one = {"b": 1, "a": {"y": [1, (2, 3)], "x": "é"}, "f": 0.1}
    two = {"f": 0.1, "a": {"x": "é", "y": [1, [2, 3]]}, "b": 1}
    assert canonical_json(one) == canonical_json(two) == '{"a":{"x":"é","y":[1,[2,3]]},"b":1,"f":0.1}'
    when = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert canonical_json({"t": when}) == '{"t":"2026-01-01T10:00:00.000000Z"}'
    assert canonical_json([Score("c1", 0.25, (0, 9))]) == '[{"chunk_id":"c1","score":0.25,"span":[0,9]}]'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_canonical_json_rejects_nan_and_infinity(value: float) -> None:
    with pytest.raises(ValueError, match="NaN and infinity"):
        canonical_json({"scores": [1.0, value]})


def test_canonical_json_rejects_what_would_not_read_back() -> None:
    with pytest.raises(TypeError):
        canonical_json({1: "int key"})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})
    with pytest.raises(ValueError, match="naive"):
        canonical_json({"t": datetime(2026, 1, 1)})
