"""`kag audit list|show|verify` through Typer's CliRunner on a real ledger in a temp data dir."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from typer.testing import CliRunner

from kag.audit import AuditEntry, AuditLog
from kag.cli.audit import audit_app
from kag.cli.runtime import audit_log
from kag.ledger import Ledger
from kag.ledger.models import AuditRecordRow
from kag.settings import Settings
from kag.stores.bundle import DataDirLock

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    # None unsets the variable, so a KAG_DATABASE_URL in the caller's shell cannot leak in
    return {"KAG_DATA_DIR": str(tmp_path / "data"), "KAG_DATABASE_URL": None}


@pytest.fixture
def ledger(env: dict[str, str | None]) -> Iterator[Ledger]:
    led = Ledger(Settings(data_dir=Path(str(env["KAG_DATA_DIR"]))).resolved_database_url)
    yield led
    led.close()


@pytest.fixture
def entries(ledger: Ledger) -> list[AuditEntry]:
    log = AuditLog(ledger)
    specs = [("alice", ["hr"]), ("bob", ["legal"]), ("alice", ["hr", "legal"])]
    return [
        log.append({"principal": p, "collections": c, "question": f"what is rule {i}?", "answer": f"rule {i} [1]"})
        for i, (p, c) in enumerate(specs)
    ]


def run(env: dict[str, str | None], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(audit_app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_verify_intact_chain(env: dict[str, str | None], entries: list[AuditEntry]) -> None:
    code, out, _ = run(env, "verify")
    assert code == 0
    assert out.strip() == "audit chain intact: 3 records"


def test_verify_empty_data_dir(env: dict[str, str | None]) -> None:
    code, out, _ = run(env, "verify")
    assert code == 0 and "intact: 0 records" in out


def test_tampered_record_exits_1_naming_it(
    env: dict[str, str | None], ledger: Ledger, entries: list[AuditEntry]
) -> None:
    target = entries[1]
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == target.seq).values(question="what is rule X?"))
    code, _, err = run(env, "verify")
    assert code == 1
    assert err.startswith(f"Error: audit chain broken at record {target.id} (seq {target.seq}): ")
    assert "question" in err

    code, out, _ = run(env, "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["broken"]["id"] == target.id and report["broken"]["reason"] == "field_mismatch"


def test_list_filters_and_json(env: dict[str, str | None], entries: list[AuditEntry]) -> None:
    code, out, _ = run(env, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [e.id for e in reversed(entries)]
    assert "body" not in rows[0] and rows[0]["hash"] == entries[-1].hash

    code, out, _ = run(env, "list", "--principal", "alice", "--collection", "legal", "--json")
    assert [r["id"] for r in json.loads(out)] == [entries[2].id]

    code, out, _ = run(env, "list", "-c", "hr", "--limit", "1", "--json")
    assert [r["id"] for r in json.loads(out)] == [entries[2].id]

    since = entries[1].created_at.isoformat()
    code, out, _ = run(env, "list", "--since", since, "--json")
    assert [r["id"] for r in json.loads(out)] == [entries[2].id, entries[1].id]

    code, out, _ = run(env, "list", "--since", "2999-01-01", "--json")
    assert code == 0 and json.loads(out) == []

    code, out, _ = run({**env, "COLUMNS": "200"}, "list")
    assert code == 0 and entries[0].id in out and "alice" in out and "hr, legal" in out


def test_list_rejects_a_bad_time(env: dict[str, str | None]) -> None:
    code, _, err = run(env, "list", "--since", "yesterday")
    assert code == 1 and err.startswith("Error: --since 'yesterday' is not an ISO-8601 time")


def test_show_prints_the_whole_record(env: dict[str, str | None], entries: list[AuditEntry]) -> None:
    code, out, _ = run(env, "show", entries[0].id)
    assert code == 0
    record = json.loads(out)
    assert record["id"] == entries[0].id and record["hash"] == entries[0].hash
    assert record["body"]["answer"] == "rule 0 [1]" and record["body"]["created_at"] == entries[0].body["created_at"]

    code, _, err = run(env, "show", "a_nope")
    assert code == 1 and err.startswith("Error: no audit record with id a_nope")


def test_works_while_another_process_holds_the_data_dir(env: dict[str, str | None], entries: list[AuditEntry]) -> None:
    lock = DataDirLock(Path(str(env["KAG_DATA_DIR"])))
    lock.acquire()
    try:
        code, out, _ = run(env, "verify")
    finally:
        lock.release()
    assert code == 0 and "intact: 3 records" in out


# --- anchors outside the ledger, on SQLite and PostgreSQL -----------------------------------

HMAC_KEY = "cli-test-audit-hmac-key-0123456789"


@pytest.fixture
def db_env(ledger_url: str, tmp_path: Path) -> dict[str, str | None]:
    return {
        "KAG_DATA_DIR": str(tmp_path / "data"),
        "KAG_DATABASE_URL": ledger_url,
        "KAG_AUDIT_CHECKPOINT_PATH": str(tmp_path / "anchors" / "audit-checkpoints.jsonl"),
        "KAG_AUDIT_HMAC_KEY": HMAC_KEY,
    }


def signed_entries(env: dict[str, str | None], n: int = 3) -> tuple[Ledger, list[AuditEntry]]:
    """Records appended as the service does: through the settings, so each writes a checkpoint."""
    settings = Settings(
        _env_file=None,
        database_url=env["KAG_DATABASE_URL"],
        audit_checkpoint_path=env["KAG_AUDIT_CHECKPOINT_PATH"],
        audit_hmac_key=env["KAG_AUDIT_HMAC_KEY"],
    )
    ledger = Ledger(settings.resolved_database_url)
    log = audit_log(settings, ledger)
    entries = [log.append({"principal": "alice", "collections": ["hr"], "question": f"q{i}?"}) for i in range(n)]
    return ledger, entries


def drop_last_record(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        last = conn.execute(select(func.max(AuditRecordRow.seq))).scalar_one()
        conn.execute(delete(AuditRecordRow).where(AuditRecordRow.seq == last))


def test_head_then_expect_head_catches_a_removed_last_record(db_env: dict[str, str | None]) -> None:
    env = {**db_env, "KAG_AUDIT_CHECKPOINT_PATH": None, "KAG_AUDIT_HMAC_KEY": None}
    ledger, entries = signed_entries(db_env)
    try:
        code, out, _ = run(env, "head")
        assert code == 0 and out == f"{entries[-1].hash} 3 records\n"
        code, out, _ = run(env, "head", "--json")
        assert json.loads(out) == {
            "count": 3,
            "head_seq": entries[-1].seq,
            "head_id": entries[-1].id,
            "head_hash": entries[-1].hash,
        }
        code, out, _ = run(env, "verify", "--expect-head", entries[-1].hash)
        assert code == 0 and out.strip() == "audit chain intact: 3 records (the expected head is in it)"

        drop_last_record(ledger)
        code, out, _ = run(env, "verify")
        assert code == 0 and "intact: 2 records" in out  # the chain alone cannot see it
        code, _, err = run(env, "verify", "--expect-head", entries[-1].hash)
        assert code == 1
        assert err.startswith(f"Error: audit chain broken at record {entries[1].id} (seq {entries[1].seq}): ")
        assert "no record of it has the expected head" in err and "removed" in err
        code, _, err = run(env, "verify", "--expect-head", "nothex")
        assert code == 1 and "is not a sha256 hash" in err
    finally:
        ledger.close()


def test_checkpoints_catch_a_removed_last_record(db_env: dict[str, str | None], tmp_path: Path) -> None:
    ledger, entries = signed_entries(db_env)
    try:
        code, out, _ = run(db_env, "verify")
        assert code == 0 and out.strip() == "audit chain intact: 3 records (3 signed checkpoints agree)"
        # a copy kept elsewhere, checked with --checkpoints PATH even where the settings name none
        copy = tmp_path / "shipped.jsonl"
        shutil.copy(str(db_env["KAG_AUDIT_CHECKPOINT_PATH"]), copy)

        drop_last_record(ledger)
        code, _, err = run(db_env, "verify")
        assert code == 1
        assert err.startswith(f"Error: audit chain broken at record {entries[1].id} (seq {entries[1].seq}): ")
        assert "vouches for 3 records" in err and "the newest 1 record(s) were removed" in err

        bare = {**db_env, "KAG_AUDIT_CHECKPOINT_PATH": None}
        code, _, err = run(bare, "verify", "--checkpoints", str(copy))
        assert code == 1 and "were removed" in err
        code, out, _ = run(bare, "verify", "--checkpoints", str(copy), "--json")
        report = json.loads(out)
        assert code == 1 and report["broken"]["reason"] == "truncated" and report["checkpoints"] == 3
        code, _, err = run({**bare, "KAG_AUDIT_HMAC_KEY": None}, "verify", "--checkpoints", str(copy))
        assert code == 1 and "need KAG_AUDIT_HMAC_KEY" in err
        code, _, err = run(bare, "verify", "--checkpoints", str(tmp_path / "nope.jsonl"))
        assert code == 1 and "does not exist" in err
    finally:
        ledger.close()


def test_a_forged_checkpoint_line_fails_verify(db_env: dict[str, str | None]) -> None:
    ledger, entries = signed_entries(db_env)
    ledger.close()
    path = Path(str(db_env["KAG_AUDIT_CHECKPOINT_PATH"]))
    lines = path.read_text().splitlines()
    forged = json.loads(lines[-1]) | {"count": 2, "head": entries[1].hash, "seq": entries[1].seq}
    path.write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    code, _, err = run(db_env, "verify")
    assert code == 1
    assert err.startswith("Error: audit chain broken at its anchors: line 3 of the checkpoint file")
    assert "HMAC does not verify" in err


def test_checkpoint_command_signs_the_head(db_env: dict[str, str | None]) -> None:
    bare = {**db_env, "KAG_AUDIT_CHECKPOINT_PATH": None}
    ledger, entries = signed_entries(bare)
    ledger.close()
    code, out, _ = run(db_env, "checkpoint")
    assert code == 0 and out.strip() == f"checkpoint: 3 records, head {entries[-1].hash}"
    code, out, _ = run(db_env, "verify")
    assert code == 0 and "1 signed checkpoints agree" in out
    code, _, err = run(bare, "checkpoint")
    assert code == 1 and err.startswith("Error: no audit checkpoint file is configured")


# --- one bad record never hides the others --------------------------------------------------


def test_list_marks_an_unreadable_payload_and_shows_the_others(
    env: dict[str, str | None], ledger: Ledger, entries: list[AuditEntry]
) -> None:
    bad = entries[1]
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == bad.seq).values(payload="{garbage"))
    code, out, _ = run(env, "list", "--json")
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)}
    assert list(rows) == [e.id for e in reversed(entries)]
    assert rows[bad.id]["intact"] is False and rows[bad.id]["error"] == "unreadable payload"
    assert all(r["intact"] and r["error"] is None for i, r in rows.items() if i != bad.id)

    code, out, err = run({**env, "COLUMNS": "200"}, "list")
    assert code == 0 and all(e.id in out for e in entries) and "unreadable payload" in out
    assert "what is rule 0?" in out and "what is rule 2?" in out
    assert f"1 record(s) not intact: {bad.id}: unreadable payload" in err

    code, out, _ = run(env, "show", bad.id)
    assert code == 0 and json.loads(out)["error"] == "unreadable payload"


def test_list_shows_the_hashed_question_and_marks_edited_columns(
    env: dict[str, str | None], ledger: Ledger, entries: list[AuditEntry]
) -> None:
    target = entries[0]
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditRecordRow).where(AuditRecordRow.seq == target.seq).values(question="forged?"))
    code, out, _ = run(env, "list", "--json")
    row = next(r for r in json.loads(out) if r["id"] == target.id)
    assert row["question"] == "what is rule 0?" and row["intact"] is False and "question" in row["error"]


def test_list_keeps_ids_whole_on_a_narrow_terminal(env: dict[str, str | None], entries: list[AuditEntry]) -> None:
    code, out, _ = run({**env, "COLUMNS": "40"}, "list")
    assert code == 0
    for e in entries:
        assert e.id in out
    assert "a_…" not in out and not any("…" in line and "a_" in line for line in out.splitlines())
