"""The hash-chained audit log on SQLite and PostgreSQL: chaining, tamper detection, concurrency, filters."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update

from kag.audit import GENESIS_HASH, UNREADABLE_PAYLOAD, AuditEntry, AuditLog, BreakReason, canonical_json
from kag.audit_checkpoints import CheckpointFile, sign
from kag.errors import AuditWriteError, ConfigurationError, InvalidRequestError, NotFoundError, StoreError
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


# --- what is read back is what was hashed -------------------------------------------------


def test_entries_show_the_hashed_payload_not_edited_columns(ledger: Ledger, log: AuditLog) -> None:
    entries = chain(log, 3)
    target = entries[1]
    with ledger.engine.begin() as conn:
        conn.execute(
            update(AuditRecordRow)
            .where(AuditRecordRow.seq == target.seq)
            .values(question="forged question?", collections=["legal"], collections_key=",legal,", principal="eve")
        )
    got = log.get(target.id)
    assert (got.question, got.collections, got.principal) == ("question 1?", ("hr",), "alice")
    assert got.intact is False and got.error is not None and "differs from the hashed payload" in got.error
    # the SQL filter still runs on the edited column, but what it returns says what was hashed, marked
    listed = log.list(collection="legal")
    assert [e.id for e in listed] == [target.id] and listed[0].collections == ("hr",) and not listed[0].intact
    assert all(e.intact and e.error is None for e in log.list() if e.id != target.id)


def test_edited_payload_reads_back_marked_not_intact(ledger: Ledger, log: AuditLog) -> None:
    entries = chain(log, 2)
    forged = canonical_json({**entries[0].body, "answer": "forged answer"})
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == entries[0].seq).values(payload=forged))
    got = log.get(entries[0].id)
    assert got.body["answer"] == "forged answer" and got.intact is False
    assert got.error == "its stored hash does not cover its payload"
    assert log.get(entries[1].id).intact is True


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", ""], ids=["broken-json", "json-array", "empty"])
def test_an_unreadable_payload_is_listed_marked_and_the_others_read(
    ledger: Ledger, log: AuditLog, payload: str
) -> None:
    entries = chain(log, 3)
    bad = entries[1]
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == bad.seq).values(payload=payload))
    listed = log.list()
    assert [e.id for e in listed] == [e.id for e in reversed(entries)]
    marked = {e.id: e for e in listed}[bad.id]
    assert marked.intact is False and marked.error == UNREADABLE_PAYLOAD and marked.body == {}
    assert not marked.readable and marked.to_dict()["error"] == "unreadable payload"
    others = [e for e in listed if e.id != bad.id]
    assert all(e.intact and e.body["answer"] for e in others)
    assert log.get(bad.id).error == UNREADABLE_PAYLOAD
    report = log.verify()
    assert report.broken is not None and report.broken.id == bad.id


# --- anchors outside the ledger: a removed tail --------------------------------------------

HMAC_KEY = b"test-audit-hmac-key-0123456789"


def delete_last(ledger: Ledger, n: int = 1) -> None:
    with ledger.engine.begin() as conn:
        seqs = conn.execute(select(AuditRecordRow.seq).order_by(AuditRecordRow.seq.desc()).limit(n)).scalars().all()
        conn.execute(delete(AuditRecordRow).where(AuditRecordRow.seq.in_(seqs)))


def test_head_reports_the_newest_record_and_the_count(log: AuditLog) -> None:
    assert log.head().to_dict() == {"count": 0, "head_seq": None, "head_id": None, "head_hash": GENESIS_HASH}
    entries = chain(log, 3)
    head = log.head()
    assert (head.count, head.seq, head.id, head.hash) == (3, entries[-1].seq, entries[-1].id, entries[-1].hash)


def test_a_removed_tail_fails_verify_against_the_expected_head(ledger: Ledger, log: AuditLog) -> None:
    entries = chain(log, 5)
    noted = log.head().hash
    assert log.verify(expect_head=noted).ok
    # a head noted earlier stays in the chain as records are appended after it
    log.append(body(5))
    assert log.verify(expect_head=noted).ok
    delete_last(ledger, 2)
    # the chain alone cannot see it: what is left is a valid chain
    assert log.verify().ok
    report = log.verify(expect_head=noted)
    assert not report.ok and report.broken is not None
    assert report.broken.reason is BreakReason.TRUNCATED
    assert (report.broken.id, report.broken.seq) == (entries[3].id, entries[3].seq)
    assert "no record of it has the expected head" in report.broken.detail and "removed" in report.broken.detail
    assert report.checked == 4


def test_expected_head_must_be_a_sha256(log: AuditLog) -> None:
    chain(log, 1)
    with pytest.raises(InvalidRequestError, match="64 hex digits"):
        log.verify(expect_head="abc")


def test_checkpoints_are_written_per_append_and_signed(ledger: Ledger, tmp_path: Path) -> None:
    cps = CheckpointFile(tmp_path / "cp" / "audit.jsonl", HMAC_KEY)
    log = AuditLog(ledger, checkpoints=cps)
    entries = chain(log, 4)
    read = cps.read()
    assert read.bad == []
    assert [(c.count, c.seq, c.head) for c in read.checkpoints] == [
        (i + 1, e.seq, e.hash) for i, e in enumerate(entries)
    ]
    line = json.loads((tmp_path / "cp" / "audit.jsonl").read_text().splitlines()[-1])
    assert set(line) == {"count", "seq", "head", "time", "mac"}
    assert line["mac"] == sign(HMAC_KEY, line["count"], line["seq"], line["head"], line["time"])
    report = log.verify()
    assert report.ok and report.checkpoints == 4


def test_checkpoints_every_n_records(ledger: Ledger, tmp_path: Path) -> None:
    cps = CheckpointFile(tmp_path / "audit.jsonl", HMAC_KEY)
    log = AuditLog(ledger, checkpoints=cps, checkpoint_every=2)
    chain(log, 5)
    assert [c.count for c in cps.read().checkpoints] == [2, 4]


def test_checkpoints_detect_a_removed_tail(ledger: Ledger, tmp_path: Path) -> None:
    cps = CheckpointFile(tmp_path / "audit.jsonl", HMAC_KEY)
    log = AuditLog(ledger, checkpoints=cps)
    entries = chain(log, 5)
    delete_last(ledger)
    report = log.verify()
    assert not report.ok and report.broken is not None and report.broken.reason is BreakReason.TRUNCATED
    assert (report.broken.id, report.broken.seq) == (entries[3].id, entries[3].seq)
    assert (
        "vouches for 5 records" in report.broken.detail
        and "the newest 1 record(s) were removed" in report.broken.detail
    )
    # a log opened without its own file is checked against the one passed in
    other = AuditLog(ledger).verify(checkpoints=cps)
    assert other.broken is not None and other.broken.reason is BreakReason.TRUNCATED


def test_checkpoints_detect_a_rewritten_tail(ledger: Ledger, tmp_path: Path) -> None:
    cps = CheckpointFile(tmp_path / "audit.jsonl", HMAC_KEY)
    entries = chain(AuditLog(ledger, checkpoints=cps), 4)
    delete_last(ledger, 2)
    # whoever lacks the key rebuilds the tail as a valid chain of the same length, unsigned
    rewritten = [AuditLog(ledger).append(body(9)) for _ in range(2)]
    report = AuditLog(ledger, checkpoints=cps).verify()
    assert report.broken is not None and report.broken.reason is BreakReason.CHECKPOINT_MISMATCH
    assert report.broken.id == rewritten[0].id and "rewritten" in report.broken.detail
    assert report.head_hash == entries[1].hash


def test_a_forged_checkpoint_line_fails_its_hmac(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    cps = CheckpointFile(path, HMAC_KEY)
    log = AuditLog(ledger, checkpoints=cps)
    chain(log, 3)
    lines = path.read_text().splitlines()
    # lower the signed count so that a removed tail would pass: the MAC no longer matches
    forged = json.loads(lines[2]) | {"count": 2}
    path.write_text("\n".join([*lines[:2], json.dumps(forged)]) + "\n")
    report = log.verify()
    assert report.broken is not None and report.broken.reason is BreakReason.BAD_CHECKPOINT
    assert report.broken.id is None and "line 3" in report.broken.detail and "HMAC" in report.broken.detail
    # a line signed with another key fails the same way
    path.write_text("\n".join(lines) + "\n")
    CheckpointFile(path, b"another-key-0123456789").append(4, 99, "f" * 64)
    report = log.verify()
    assert report.broken is not None and report.broken.reason is BreakReason.BAD_CHECKPOINT
    assert "line 4" in report.broken.detail
    path.write_text("\n".join(lines) + "\nnot json\n")
    assert "not JSON" in (log.verify().broken or pytest.fail("no break")).detail


def test_checkpoint_file_errors(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least 16"):
        CheckpointFile(tmp_path / "a.jsonl", b"short")
    log = AuditLog(ledger, checkpoints=CheckpointFile(tmp_path / "missing.jsonl", HMAC_KEY))
    with pytest.raises(StoreError, match="does not exist"):
        log.verify()
    with pytest.raises(InvalidRequestError, match="no audit checkpoint file"):
        AuditLog(ledger).checkpoint()


def test_checkpoint_now_signs_a_verified_head(ledger: Ledger, tmp_path: Path) -> None:
    entries = chain(AuditLog(ledger), 3)
    cps = CheckpointFile(tmp_path / "audit.jsonl", HMAC_KEY)
    log = AuditLog(ledger, checkpoints=cps)
    written = log.checkpoint()
    assert (written.count, written.seq, written.head) == (3, entries[-1].seq, entries[-1].hash)
    assert log.verify().ok
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == entries[0].seq).values(question="x"))
    with pytest.raises(StoreError, match="does not hold"):
        log.checkpoint()
    assert len(cps.read().checkpoints) == 1


def test_an_unwritable_checkpoint_fails_the_append(ledger: Ledger, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AuditLog(ledger, checkpoints=CheckpointFile(blocker / "audit.jsonl", HMAC_KEY))
    with pytest.raises(AuditWriteError, match="is stored but its checkpoint is not"):
        log.append(body(0))
