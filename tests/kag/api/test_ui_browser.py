"""The auditor review page in a real headless Chromium (Debian's package), driven by Playwright."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, update

from kag.ledger.models import AuditRecordRow
from tests.kag.api.conftest import Live

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("KAG_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium); CI must run the browser test")
        pytest.skip("chromium is not installed (apt-get install -y chromium, or set KAG_TEST_CHROMIUM)")
    return path


def test_auditor_reviews_an_answer_in_the_browser(live: Live, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    answer = live.answer
    assert answer["citations"], "the fixture answer must cite something"
    citation = answer["citations"][0]
    doc = httpx.get(
        f"{live.url}/v1/documents/{citation['document_id']}?include_text=true",
        headers={"Authorization": f"Bearer {live.keys['admin']}"},
    ).json()
    expected_span = doc["text"][citation["char_start"] : citation["char_end"]]
    assert expected_span == citation["quote"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{live.url}/ui/audit")
            # a reader key is refused by the page itself
            page.fill("#key", live.keys["reader"])
            page.click("#login-form button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("use an auditor key")
            page.fill("#key", live.keys["auditor"])
            page.click("#login-form button[type=submit]")
            expect(page.locator("#chain")).to_contain_text("Hash chain intact")
            rows = page.locator("#records tbody tr")
            expect(rows.first).to_be_visible()

            # filter by a principal nobody is, then by the one who asked
            page.fill("#filters input[name=principal]", "k_nobody")
            page.click("#filters button[type=submit]")
            expect(page.locator("#empty")).to_be_visible()
            record = httpx.get(
                f"{live.url}/v1/audit/{answer['audit_id']}", headers={"Authorization": f"Bearer {live.keys['auditor']}"}
            ).json()
            principal = record["principal"]
            page.fill("#filters input[name=principal]", principal)
            page.fill("#filters input[name=collection]", "hr")
            page.click("#filters button[type=submit]")
            row = page.locator(f"#records tbody tr[data-id='{answer['audit_id']}']")
            expect(row).to_be_visible()
            expect(row.locator(".question")).to_have_text(answer["question"])
            # the key's name stands next to its id
            expect(row.locator(".principal")).to_have_text(f"hr-reader ({principal})")

            # the filtered records download as CSV and as JSON
            with page.expect_download() as info:
                page.click("#export-csv")
            download = info.value
            assert download.suggested_filename.startswith("kag-audit-")
            assert download.suggested_filename.endswith(".csv")
            exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
            assert [r["id"] for r in exported] == [
                r.get_attribute("data-id") for r in page.locator("#records tbody tr").all()
            ]
            assert answer["audit_id"] in {r["id"] for r in exported}
            assert all(r["principal"] == principal and r["principal_name"] == "hr-reader" for r in exported)
            with page.expect_download() as info:
                page.click("#export-json")
            records = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
            assert info.value.suggested_filename.endswith(".json")
            mine = next(r for r in records if r["id"] == answer["audit_id"])
            assert mine["body"]["answer"] == answer["answer"] and mine["intact"] is True
            supported = sum(1 for s in answer["sentences"] if s["action"] == "kept")
            replaced = sum(1 for s in answer["sentences"] if s["action"] == "replaced")
            expected_verdicts = (
                "abstained"
                if answer["abstained"]
                else f"{supported}/{len(answer['sentences'])} model sentences supported"
                + (f", {replaced} replaced by quotes" if replaced else "")
            )
            expect(row.locator(".verdicts")).to_have_text(expected_verdicts)

            row.click()
            detail = page.locator("#detail")
            expect(detail.locator("h2")).to_have_text(answer["question"])
            expect(detail.locator(".answer")).to_have_text(answer["answer"])
            expect(detail.locator(".sentence")).to_have_count(len(answer["sentences"]))
            for i, sentence in enumerate(answer["sentences"]):
                # a replaced sentence is never labelled supported
                expect(detail.locator(".sentence .verdict").nth(i)).to_contain_text(sentence["label"])
            expect(detail.locator(".model")).to_contain_text("sha256")
            expect(detail.locator(".sampling")).to_contain_text("seed=")
            expect(detail.locator("pre.prompt").first).to_contain_text(answer["question"])
            expect(detail.locator("dd.principal")).to_have_text(f"hr-reader ({principal})")

            # each retriever's ranking as the record holds it, then the fused and reranked orders
            retrieval = record["body"]["retrieval"]
            rankings = {**retrieval["per_retriever"], "fused": retrieval["fused"], "reranked": retrieval["reranked"]}
            assert rankings["dense"] and rankings["lexical"], "the fixture answer must have per-retriever rankings"
            for name, hits in rankings.items():
                table = detail.locator(f"table.rankings[data-retriever='{name}']")
                expect(table.locator("caption")).to_have_text(f"{name} ({len(hits)})")
                expect(table.locator("tbody tr")).to_have_count(len(hits))
                if hits:
                    first = table.locator("tbody tr").first
                    expect(first.locator(".chunk")).to_have_text(hits[0][0])
                    expect(first.locator(".score")).to_have_text(f"{hits[0][1]:.4f}")

            cite = detail.locator(
                f".citation[data-document='{citation['document_id']}'][data-start='{citation['char_start']}']"
            ).first
            cite.locator("button.expand").click()
            mark = cite.locator("mark.cited")
            expect(mark).to_be_visible()
            assert mark.text_content() == expected_span
            # the highlighted span sits inside its real surrounding text
            passage = cite.locator(".passage").text_content() or ""
            assert expected_span in passage and len(passage) > len(expected_span)
            page.screenshot(path=str(tmp_path / "audit-review.png"), full_page=True)

            # an SQL edit of the question column: the page shows what was hashed, marked altered
            engine = create_engine(f"sqlite:///{live.server.data_dir / 'ledger.sqlite3'}")
            table = AuditRecordRow.__table__
            where = table.c.id == answer["audit_id"]
            try:
                with engine.begin() as conn:
                    conn.execute(update(table).where(where).values(question="Forged question?"))
                page.click("#filters button[type=submit]")
                expect(row).to_have_class(re.compile(r"\baltered\b"))
                expect(row.locator(".question")).to_have_text(answer["question"])
                expect(row.locator(".verdicts")).to_contain_text("ALTERED")
                row.click()
                expect(detail.locator("h2")).to_have_text(answer["question"])
                expect(detail.locator("dd.intact")).to_contain_text("ALTERED")
            finally:
                with engine.begin() as conn:
                    conn.execute(update(table).where(where).values(question=answer["question"]))
                engine.dispose()
            page.click("#filters button[type=submit]")
            expect(row).not_to_have_class(re.compile(r"\baltered\b"))
        finally:
            browser.close()
    assert (tmp_path / "audit-review.png").stat().st_size > 10_000


def test_auditor_opens_an_entity_neighbourhood_and_an_edge_s_evidence(live: Live, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    headers = {"Authorization": f"Bearer {live.keys['auditor']}"}
    hood = httpx.get(f"{live.url}/v1/graph/entities/Redis/neighbourhood?hops=1", headers=headers).json()
    (redis,) = hood["neighbourhoods"]
    (uses,) = [e for e in redis["edges"] if e["type"] == "Uses" and e["target"] == "Redis"]
    ev = uses["evidence"]
    text = httpx.get(f"{live.url}/v1/documents/{ev['document_id']}?include_text=true", headers=headers).json()["text"]
    assert text[ev["doc_start"] : ev["doc_end"]] == ev["quote"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{live.url}/ui/audit")
            page.fill("#key", live.keys["auditor"])
            page.click("#login-form button[type=submit]")
            expect(page.locator("#chain")).to_contain_text("Hash chain intact")

            page.fill("#graph-form input[name=entity]", "nobody-knows-this")
            page.click("#graph-form button[type=submit]")
            expect(page.locator("#graph-error")).to_contain_text("no entity named 'nobody-knows-this'")

            page.fill("#graph-form input[name=entity]", "redis")
            page.click("#graph-form button[type=submit]")
            picture = page.locator("#graph-views svg[data-collection='hr']")
            expect(picture).to_be_visible()
            expect(picture.locator(".node")).to_have_count(len(redis["nodes"]))
            expect(picture.locator(".edge")).to_have_count(len(redis["edges"]))
            expect(picture.locator(".node.root text")).to_have_text(redis["entity"]["name"])

            picture.locator(f".edge[data-relation='{uses['relation_id']}'] text").click()
            detail = page.locator("#edge-detail")
            expect(detail).to_be_visible()
            expect(detail.locator(".relation")).to_have_text(f"{uses['source']} Uses Redis")
            expect(detail.locator(".grade")).to_contain_text(uses["grade"])
            expect(detail.locator(".kind")).to_have_text(uses["source_kind"])
            expect(detail.locator(".quote")).to_have_text(ev["quote"])
            expect(detail.locator(".where")).to_contain_text(f"characters {ev['doc_start']}–{ev['doc_end']}")
            mark = detail.locator("mark.evidence")
            expect(mark).to_have_text(ev["quote"])  # the span read back from the document at those offsets
            expect(picture.locator(f".edge.selected[data-relation='{uses['relation_id']}']")).to_have_count(1)
            page.screenshot(path=str(tmp_path / "neighbourhood.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "neighbourhood.png").stat().st_size > 10_000
