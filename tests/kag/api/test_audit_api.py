"""The audit routes against SQL edits of the ledger: access and display come from the hashed payload, one bad
record never hides the others, the head and its checkpoints, and the CSV / JSON export.

The records are appended to the session's shared ledger and every edit is undone, so the chain that the
other API tests verify stays intact."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from kag.api.routers.audit import CSV_COLUMNS
from kag.audit import AuditEntry, AuditLog
from kag.audit_checkpoints import CheckpointFile
from kag.ledger.models import AuditRecordRow
from tests.kag.api.conftest import Api


def audit(api: Api) -> AuditLog:
    return api.client.app.state.services.audit  # type: ignore[attr-defined,no-any-return]


def record(api: Api, collections: list[str], question: str, principal: str = "k_test") -> AuditEntry:
    return audit(api).append(
        {"principal": principal, "collections": collections, "question": question, "answer": f"answer to {question}"}
    )


@contextmanager
def edited(api: Api, entry: AuditEntry, **values: Any) -> Iterator[None]:
    """Change columns of one stored record with SQL, as someone with database access would; undone after."""
    table = AuditRecordRow.__table__
    engine = api.runtime.stores.ledger.engine
    with engine.begin() as conn:
        saved = dict(conn.execute(select(table).where(table.c.seq == entry.seq)).mappings().one())
        conn.execute(update(table).where(table.c.seq == entry.seq).values(**values))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c.seq == entry.seq).values(**saved))


def get(api: Api, role: str, path: str, **params: Any) -> Any:
    return api.client.get(path, params=params, headers=api.h(role))


def test_access_and_display_come_from_the_payload_after_a_column_edit(api: Api) -> None:
    eng = record(api, ["eng"], "What is the eng launch code?")
    assert get(api, "auditor", f"/v1/audit/{eng.id}").status_code == 404  # auditor is scoped to hr
    with edited(api, eng, question="Harmless hr question?", collections=["hr"], collections_key=",hr,"):
        r = get(api, "auditor", f"/v1/audit/{eng.id}")
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "not_found"
        listed = get(api, "auditor", "/v1/audit", limit=5).json()
        assert eng.id not in {x["id"] for x in listed["records"]} and listed["hidden"] >= 1
        # a key over every collection sees what was hashed, marked as altered
        rec = get(api, "auditor_all", f"/v1/audit/{eng.id}").json()
        assert rec["question"] == "What is the eng launch code?" and rec["collections"] == ["eng"]
        assert rec["intact"] is False and "differs from the hashed payload" in rec["error"]
        summary = next(x for x in get(api, "auditor_all", "/v1/audit", limit=5).json()["records"] if x["id"] == eng.id)
        assert summary["question"] == "What is the eng launch code?" and summary["intact"] is False

    hr = record(api, ["hr"], "How many leave days?")
    with edited(api, hr, question="Forged question?"):
        rec = get(api, "auditor", f"/v1/audit/{hr.id}").json()
        assert rec["question"] == "How many leave days?" and rec["intact"] is False and "question" in rec["error"]
    rec = get(api, "auditor", f"/v1/audit/{hr.id}").json()
    assert rec["intact"] is True and rec["error"] is None
    assert get(api, "auditor", "/v1/audit/verify").json()["ok"] is True


def test_an_unreadable_payload_is_marked_and_the_others_are_listed(api: Api) -> None:
    good = record(api, ["hr"], "Who approves expenses?")
    bad = record(api, ["hr"], "Which cache is used?")
    with edited(api, bad, payload="{this is not json"):
        r = get(api, "auditor_all", "/v1/audit", limit=5)
        assert r.status_code == 200, r.text
        rows = {x["id"]: x for x in r.json()["records"]}
        assert rows[good.id]["intact"] is True and rows[good.id]["question"] == "Who approves expenses?"
        assert rows[bad.id]["intact"] is False and rows[bad.id]["error"] == "unreadable payload"
        rec = get(api, "auditor_all", f"/v1/audit/{bad.id}").json()
        assert rec["intact"] is False and rec["error"] == "unreadable payload" and rec["body"] == {}
        # its collections cannot be trusted: a scoped key does not see it, but sees the rest
        scoped = get(api, "auditor", "/v1/audit", limit=5).json()
        assert good.id in {x["id"] for x in scoped["records"]} and bad.id not in {x["id"] for x in scoped["records"]}
        assert scoped["hidden"] >= 1
        assert get(api, "auditor", f"/v1/audit/{bad.id}").status_code == 404
        exported = get(api, "auditor_all", "/v1/audit/export", format="json", limit=5).json()
        assert {x["id"]: x["error"] for x in exported}[bad.id] == "unreadable payload"
        verify = get(api, "auditor", "/v1/audit/verify").json()
        assert verify["ok"] is False and verify["broken"]["id"] == bad.id


def test_head_and_checkpoints_show_a_removed_last_record(api: Api, tmp_path: Path) -> None:
    log = audit(api)
    r = get(api, "auditor", "/v1/audit/head")
    assert r.status_code == 200
    assert r.json() == log.head().to_dict() and r.json()["count"] == log.count()
    log.checkpoints = CheckpointFile(tmp_path / "audit.jsonl", b"api-test-hmac-key-0123456789")
    table = AuditRecordRow.__table__
    engine = api.runtime.stores.ledger.engine
    try:
        last = record(api, ["hr"], "Is this the last record?")
        head = get(api, "auditor", "/v1/audit/head").json()
        assert head["head_hash"] == last.hash and head["head_id"] == last.id
        verify = get(api, "auditor", "/v1/audit/verify").json()
        assert verify["ok"] is True and verify["checkpoints"] == 1
        with engine.begin() as conn:
            saved = dict(conn.execute(select(table).where(table.c.seq == last.seq)).mappings().one())
            conn.execute(delete(table).where(table.c.seq == last.seq))
        try:
            assert get(api, "auditor", "/v1/audit/head").json()["count"] == head["count"] - 1
            verify = get(api, "auditor", "/v1/audit/verify").json()
            assert verify["ok"] is False and verify["broken"]["reason"] == "truncated"
            assert "the newest 1 record(s) were removed" in verify["broken"]["detail"]
        finally:
            with engine.begin() as conn:
                conn.execute(insert(table).values(**saved))
    finally:
        log.checkpoints = None
    assert get(api, "auditor", "/v1/audit/verify").json()["ok"] is True


def test_records_name_the_key_that_asked(api: Api, answered: dict[str, Any]) -> None:
    rec = get(api, "auditor", f"/v1/audit/{answered['audit_id']}").json()
    assert rec["principal"] == api.ids["reader"] and rec["principal_name"] == "test-reader"
    listed = get(api, "auditor", "/v1/audit", principal=api.ids["reader"]).json()["records"]
    assert listed and all(x["principal_name"] == "test-reader" for x in listed)
    other = record(api, ["hr"], "Asked from the CLI?", principal="cli")
    assert get(api, "auditor", f"/v1/audit/{other.id}").json()["principal_name"] is None


def test_export_csv_and_json_with_the_list_filters(api: Api, answered: dict[str, Any]) -> None:
    mine = [record(api, ["hr"], f"Export question {i}?", principal="k_exporter") for i in range(3)]
    record(api, ["eng"], "Eng export question?", principal="k_exporter")

    r = get(api, "auditor", "/v1/audit/export", principal="k_exporter")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="kag-audit-')
    rows = list(csv.DictReader(io.StringIO(r.text)))
    # the hr auditor gets the hr records only, newest first, with the list's columns
    assert [x["id"] for x in rows] == [e.id for e in reversed(mine)]
    assert rows[0]["question"] == "Export question 2?" and rows[0]["collections"] == "hr"
    assert rows[0]["answer"] == "answer to Export question 2?" and rows[0]["intact"] == "True"
    listed = get(api, "auditor", "/v1/audit", principal="k_exporter").json()["records"]
    assert [x["id"] for x in rows] == [x["id"] for x in listed]

    r = get(api, "auditor_all", "/v1/audit/export", principal="k_exporter", format="json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    records = r.json()
    assert len(records) == 4 and records[0]["collections"] == ["eng"]
    assert records[1]["body"]["answer"] == "answer to Export question 2?" and records[1]["hash"] == mine[2].hash
    assert len(get(api, "auditor_all", "/v1/audit/export", principal="k_exporter", format="json", limit=2).json()) == 2

    csv_rows = list(csv.DictReader(io.StringIO(get(api, "auditor", "/v1/audit/export").text)))
    assert answered["audit_id"] in {x["id"] for x in csv_rows}
    names = {x["id"]: x["principal_name"] for x in csv_rows}
    assert names[answered["audit_id"]] == "test-reader"
    # nothing matches: the header alone
    empty = get(api, "auditor", "/v1/audit/export", until="2000-01-01T00:00:00Z").text
    assert empty.splitlines() == [",".join(CSV_COLUMNS)]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"format": "xml"}, 422, "validation_error"),
        ({"since": "2026-01-01T00:00:00"}, 400, "invalid_request"),
        ({"collection": "eng"}, 403, "forbidden"),
        ({"limit": 0}, 422, "validation_error"),
    ],
)
def test_export_refuses_bad_filters_in_the_error_envelope(
    api: Api, params: dict[str, Any], status: int, code: str
) -> None:
    r = get(api, "auditor", "/v1/audit/export", **params)
    assert r.status_code == status and r.json()["error"]["code"] == code
