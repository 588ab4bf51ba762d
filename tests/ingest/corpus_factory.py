"""Small real documents of every format, written into a folder for ingestion tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

MD = """# Leave policy

## Paid time off

Employees accrue 1.75 days of paid time off (PTO) per month. Unused PTO carries over up to ten days.

## Sick leave

Sick leave is unlimited but requires a note after three consecutive days.
"""

TXT = """Atlas gateway runbook

The Atlas gateway uses Redis for session storage. When Redis is down, logins fail.

Restart order: Redis first, then the gateway pods.
"""

HTML = """<html><head><title>Osprey API</title></head><body>
<nav>Home | Products | Careers</nav>
<main><h1>Osprey API</h1><p>The Osprey API rate limit is 600 requests per minute per key.</p>
<h2>Authentication</h2><p>Every request requires an API key sent in the X-Key header.</p></main>
<footer>Copyright Northwind</footer></body></html>
"""


def write_pdf(path: Path, pages: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(datetime(2025, 1, 1, tzinfo=UTC))
    pdf.set_font("Helvetica", size=12)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, page)
    pdf.output(str(path))


def write_docx(path: Path, heading: str, paragraphs: list[str]) -> None:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    for p in paragraphs:
        document.add_paragraph(p)
    document.save(str(path))


def make_corpus(root: Path) -> Path:
    """Five good documents, one per format, plus a JSONL file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "leave.md").write_text(MD)
    (root / "runbook.txt").write_text(TXT)
    (root / "osprey.html").write_text(HTML)
    write_pdf(
        root / "incident.pdf",
        [
            "Incident INC-2041 postmortem. On 2025-03-14 the Hermes broker stopped accepting connections.",
            "Root cause: an expired TLS certificate on the Hermes message broker.",
        ],
    )
    write_docx(
        root / "adr.docx",
        "ADR 7: Session storage",
        ["We decided that the Atlas gateway uses Redis for sessions.", "Redis replaces the old Memcached cluster."],
    )
    with (root / "faq.jsonl").open("w") as fh:
        fh.write(json.dumps({"title": "VPN", "text": "Two-factor authentication is required for VPN access."}) + "\n")
        fh.write(json.dumps({"title": "Laptops", "text": "Laptops are replaced every three years."}) + "\n")
    return root


def make_bad_files(root: Path) -> dict[str, str]:
    """Files that must each fail alone, with the error code each must get."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<>> garbage without xref")
    (root / "empty.txt").write_text("   \n\n")
    (root / "binary.txt").write_bytes(b"ok \xc3\x28\xa0\xa1\x80\x81" * 20)
    (root / "table.xyz").write_text("what format is this")
    return {
        "corrupt.pdf": "corrupt_document",
        "empty.txt": "empty_document",
        "binary.txt": "undecodable",
        "table.xyz": "unsupported_format",
    }
