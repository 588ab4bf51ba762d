"""A runtime over the demo corpus, built once per session: real stores, real embedder, real SmolLM2."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data"
QUESTIONS_DOC = REPO / "docs" / "demo-questions.md"


def demo_questions() -> tuple[list[str], list[str]]:
    """(answerable, unanswerable) questions listed in docs/demo-questions.md."""
    text = QUESTIONS_DOC.read_text(encoding="utf-8")
    answerable, _, unanswerable = text.partition("## Questions the corpus does not answer")
    pattern = re.compile(r"^\d+\.\s+\*\*(.+?)\*\*", re.MULTILINE)
    return pattern.findall(answerable), pattern.findall(unanswerable)


@pytest.fixture(scope="session")
def demo_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Collections: `demo` (the whole corpus); `public` and `secret` share one document, and only
    `secret` holds the Osprey product page."""
    from kag.cli.runtime import Runtime
    from kag.settings import Settings

    root = tmp_path_factory.mktemp("demo")
    public, secret = root / "public", root / "secret"
    public.mkdir()
    secret.mkdir()
    for name in ("paid-time-off.md", "welcome.md"):
        shutil.copy(DEMO / "handbook" / name, public / name)
    shutil.copy(DEMO / "handbook" / "paid-time-off.md", secret / "paid-time-off.md")
    shutil.copy(DEMO / "products" / "osprey-api.html", secret / "osprey-api.html")

    settings = Settings(data_dir=root / "data", llm_max_tokens=96, llm_n_ctx=2048)
    runtime = Runtime(settings)
    for paths, collection in (([DEMO], "demo"), ([public], "public"), ([secret], "secret")):
        report = runtime.ingestor.ingest(paths, collection)
        assert report.status == "completed" and not report.errors, report.errors
    yield runtime
    runtime.close()
