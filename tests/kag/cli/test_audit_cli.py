"""`kag audit list|show|verify` through Typer's CliRunner on a real ledger in a temp data dir."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from kag.audit import AuditEntry, AuditLog
from kag.cli.audit import audit_app
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
