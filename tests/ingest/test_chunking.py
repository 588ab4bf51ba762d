"""Chunking with the bundled tokenizer: exact offsets, budgets, structure, overlap, determinism."""

from __future__ import annotations

import io
import itertools
import json
import random
import re

import docx
import pytest
from fpdf import FPDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.chunking import Chunker, HFTokenizer, Tokenizer
from ingest.loaders import default_registry
from kag.errors import ConfigurationError
from kag.models.embedder import bundled_embedding_model_path
from kag.records import ChunkDraft, HeadingSpan, PageSpan, ParsedDocument

WORDS = [
    *("river", "stone", "lantern", "orbit", "velvet", "harbor", "copper", "meadow", "signal", "ember"),
    *("falcon", "quartz", "thunder", "willow", "cipher", "marble", "glacier", "compass", "saffron", "beacon"),
]


@pytest.fixture(scope="module")
def tokenizer() -> HFTokenizer:
    tok = HFTokenizer(bundled_embedding_model_path())
    tok.warm_up()
    return tok


class WordTokenizer:
    """A context-free fake for property tests: each word or punctuation mark is a token."""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def sentence(rng: random.Random, lo: int = 4, hi: int = 18) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def paragraph(rng: random.Random, sentences: int = 4) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def check(doc: ParsedDocument, chunks: list[ChunkDraft], size: int, tokenizer: Tokenizer | None = None) -> None:
    """THE invariant, plus the properties every chunk list must have."""
    assert chunks, "a document with text yields chunks"
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert doc.text[c.char_start : c.char_end] == c.text
        assert c.text and c.text == c.text.strip()
        assert 0 < c.token_count <= size
        if tokenizer is not None:
            # the embedder re-tokenizes the chunk alone: it must still fit
            assert len(tokenizer.token_spans(c.text)) <= size
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts)


# --- documents in every format, built with the real libraries ---------------------------


def _pdf(rng: random.Random) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for _ in range(3):
        pdf.add_page()
        pdf.multi_cell(0, 6, "\n\n".join(paragraph(rng) for _ in range(3)))
    return bytes(pdf.output())


def _docx(rng: random.Random) -> bytes:
    document = docx.Document()
    document.add_heading("Handbook", 0)
    for part in ("Scope", "Method"):
        document.add_heading(part, 1)
        document.add_paragraph(paragraph(rng))
        document.add_heading(part + " details", 2)
        document.add_paragraph(paragraph(rng, 6))
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(1, 1).text = "cell one", sentence(rng)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _markdown(rng: random.Random) -> bytes:
    return (
        f"# Manual\n\n{paragraph(rng)}\n\n## Setup\n\n{paragraph(rng, 6)}\n\n- {sentence(rng)}\n- {sentence(rng)}\n\n"
        f"### Linux\n\n{paragraph(rng)}\n\n## Usage\n\n{paragraph(rng, 8)}\n"
    ).encode()


def _html(rng: random.Random) -> bytes:
    return (
        f"<html><head><title>T</title></head><body><h1>Manual</h1><p>{paragraph(rng)}</p>"
        f"<h2>Setup</h2><p>{paragraph(rng, 6)}</p><h3>Linux</h3><p>{paragraph(rng)}</p>"
        f"<h2>Usage</h2><ul><li>{sentence(rng)}</li><li>{sentence(rng)}</li></ul></body></html>"
    ).encode()


def _json(rng: random.Random) -> bytes:
    return json.dumps([{"title": f"Item {i}", "text": paragraph(rng)} for i in range(4)]).encode()


def _jsonl(rng: random.Random) -> bytes:
    return "\n".join(json.dumps({"id": i, "text": paragraph(rng, 3)}) for i in range(4)).encode()


def _text(rng: random.Random) -> bytes:
    return "\r\n\r\n".join(paragraph(rng, rng.randint(1, 7)) for _ in range(8)).encode()


BUILDERS = {
    "a.txt": _text,
    "a.md": _markdown,
    "a.html": _html,
    "a.pdf": _pdf,
    "a.docx": _docx,
    "a.json": _json,
    "a.jsonl": _jsonl,
}


def load(name: str, seed: int = 0) -> ParsedDocument:
    data = BUILDERS[name](random.Random(seed))
    return default_registry().for_path(name).load(data, source=name)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize(("size", "overlap"), [(24, 6), (64, 16), (200, 0)])
def test_invariant_for_every_format(tokenizer: HFTokenizer, name: str, size: int, overlap: int) -> None:
    doc = load(name)
    chunks = Chunker(tokenizer, size, overlap).chunk(doc)
    check(doc, chunks, size, tokenizer)


# --- structure --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.md", "a.html"])
def test_heading_paths_from_markdown_and_html(tokenizer: HFTokenizer, name: str) -> None:
    doc = load(name)
    chunks = Chunker(tokenizer, 64, 8).chunk(doc)
    paths = list(dict.fromkeys(c.heading_path for c in chunks))
    assert paths == [
        ("Manual",),
        ("Manual", "Setup"),
        ("Manual", "Setup", "Linux"),
        ("Manual", "Usage"),
    ]
    for c in chunks:
        # a section's first chunk starts with its heading line
        if c.ordinal == 0 or chunks[c.ordinal - 1].heading_path != c.heading_path:
            assert c.heading_path[-1] in c.text.split("\n", 1)[0]


def test_heading_paths_from_docx(tokenizer: HFTokenizer) -> None:
    chunks = Chunker(tokenizer, 64, 8).chunk(load("a.docx"))
    paths = list(dict.fromkeys(c.heading_path for c in chunks))
    # "Handbook" (Title style) holds nothing but itself, so it opens the "Scope" section
    assert paths == [("Scope",), ("Scope", "Scope details"), ("Method",), ("Method", "Method details")]
    assert chunks[0].text.startswith("Handbook\n\nScope")


def test_no_chunk_crosses_a_section(tokenizer: HFTokenizer) -> None:
    doc = load("a.md")
    chunks = Chunker(tokenizer, 48, 12).chunk(doc)
    starts = [doc.text.rfind("\n", 0, h.start) + 1 for h in doc.headings]
    for c in chunks:
        assert not any(c.char_start < s < c.char_end for s in starts)


def test_page_numbers_from_a_three_page_pdf(tokenizer: HFTokenizer) -> None:
    doc = load("a.pdf")
    assert len(doc.pages) == 3
    chunks = Chunker(tokenizer, 48, 8).chunk(doc)
    check(doc, chunks, 48, tokenizer)
    assert {c.page for c in chunks} == {1, 2, 3}
    for c in chunks:
        page = next(p for p in doc.pages if p.start <= c.char_start < p.end)
        assert c.page == page.number
    assert [c.page for c in chunks] == sorted(c.page for c in chunks)


def test_page_of_a_chunk_that_spans_pages_is_where_it_starts(tokenizer: HFTokenizer) -> None:
    text = "One two three.\n\nFour five six."
    doc = ParsedDocument(text=text, mime_type="application/pdf", pages=(PageSpan(1, 0, 14), PageSpan(2, 16, 30)))
    [chunk] = Chunker(tokenizer, 100, 0).chunk(doc)
    assert chunk.page == 1 and chunk.text == text


# --- packing ----------------------------------------------------------------------------


def test_cuts_prefer_paragraphs_then_sentences(tokenizer: HFTokenizer) -> None:
    rng = random.Random(3)
    paragraphs = [paragraph(rng, 2) for _ in range(12)]
    doc = ParsedDocument(text="\n\n".join(paragraphs), mime_type="text/plain")
    chunks = Chunker(tokenizer, 120, 0).chunk(doc)
    check(doc, chunks, 120, tokenizer)
    assert len(chunks) > 2
    for c in chunks:
        assert c.text.split("\n\n")[-1] in paragraphs  # every chunk ends at the end of a paragraph

    long_paragraph = " ".join(sentence(rng) for _ in range(30))
    doc = ParsedDocument(text=long_paragraph, mime_type="text/plain")
    chunks = Chunker(tokenizer, 60, 0).chunk(doc)
    check(doc, chunks, 60, tokenizer)
    assert len(chunks) > 3
    assert all(c.text.endswith(".") and c.text[0].isupper() for c in chunks)
    # packed, not one sentence per chunk
    assert sum(c.token_count for c in chunks) / len(chunks) > 30


def test_overlap_shares_text_between_consecutive_chunks(tokenizer: HFTokenizer) -> None:
    rng = random.Random(5)
    doc = ParsedDocument(text=" ".join(sentence(rng, 3, 8) for _ in range(60)), mime_type="text/plain")
    chunks = Chunker(tokenizer, 50, 15).chunk(doc)
    check(doc, chunks, 50, tokenizer)
    assert len(chunks) > 3
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.char_start < prev.char_end, "consecutive chunks overlap"
        shared = doc.text[nxt.char_start : prev.char_end]
        assert prev.text.endswith(shared) and nxt.text.startswith(shared)
        assert len(tokenizer.token_spans(shared)) <= 15
        assert nxt.text[0].isupper(), "the overlap starts at a sentence"
        assert nxt.char_end > prev.char_end, "every chunk adds new text"


def test_without_overlap_chunks_are_disjoint_and_cover_every_token(tokenizer: HFTokenizer) -> None:
    doc = load("a.txt", seed=9)
    chunks = Chunker(tokenizer, 40, 0).chunk(doc)
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.char_end <= nxt.char_start
    assert sum(c.token_count for c in chunks) == len(tokenizer.token_spans(doc.text))


def test_overlap_stays_inside_a_section(tokenizer: HFTokenizer) -> None:
    doc = load("a.md")
    chunks = Chunker(tokenizer, 40, 20).chunk(doc)
    for prev, nxt in itertools.pairwise(chunks):
        if prev.heading_path != nxt.heading_path:
            assert prev.char_end <= nxt.char_start


def test_a_huge_sentence_gets_hard_cuts_between_words(tokenizer: HFTokenizer) -> None:
    rng = random.Random(11)
    text = " ".join(rng.choice(WORDS) for _ in range(3000))
    doc = ParsedDocument(text=text, mime_type="text/plain")
    chunks = Chunker(tokenizer, 100, 10).chunk(doc)
    check(doc, chunks, 100, tokenizer)
    assert len(chunks) >= 30
    for c in chunks:
        assert all(word in WORDS for word in c.text.split()), "cuts fall between words"
    assert chunks[-1].char_end == len(text)


def test_a_word_longer_than_the_budget_is_cut_between_tokens(tokenizer: HFTokenizer) -> None:
    text = "-".join(["x"] * 500)  # one "word" of 999 punctuation-separated tokens
    doc = ParsedDocument(text=text, mime_type="text/plain")
    chunks = Chunker(tokenizer, 64, 8).chunk(doc)
    check(doc, chunks, 64)
    assert chunks[-1].char_end == len(text)


def test_deterministic(tokenizer: HFTokenizer) -> None:
    doc = load("a.docx", seed=4)
    first = Chunker(tokenizer, 32, 8).chunk(doc)
    assert first == Chunker(tokenizer, 32, 8).chunk(doc)
    assert first == Chunker(HFTokenizer(bundled_embedding_model_path()), 32, 8).chunk(load("a.docx", seed=4))


def test_blank_and_heading_only_documents() -> None:
    chunker = Chunker(WordTokenizer(), 10, 2)
    assert chunker.chunk(ParsedDocument(text=" \n\n ", mime_type="text/plain")) == []
    doc = ParsedDocument(text="# Alone", mime_type="text/markdown", headings=(HeadingSpan(1, "Alone", 2, 7),))
    [chunk] = chunker.chunk(doc)
    assert chunk.text == "# Alone" and chunk.heading_path == ("Alone",)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_invalid_budgets(size: int, overlap: int) -> None:
    with pytest.raises(ConfigurationError):
        Chunker(WordTokenizer(), size, overlap)


def test_tokenizer_handles_text_longer_than_the_model_maximum(tokenizer: HFTokenizer) -> None:
    text = " ".join(["lantern"] * 2000)
    spans = tokenizer.token_spans(text)
    assert len(spans) == 2000 and spans[-1] == (len(text) - 7, len(text))
    assert tokenizer.token_spans("") == []


# --- properties -------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("abcXYZ  \n\n\t.!?,;-'\"()éß漢字0") + ["Dr. ", "e.g. ", "\r\n"])


@st.composite
def documents(draw) -> ParsedDocument:
    text = "".join(draw(st.lists(_ALPHABET, max_size=400)))
    positions = sorted(draw(st.sets(st.integers(0, max(0, len(text) - 1)), max_size=6))) if text else []
    headings = []
    for start in positions:
        end = min(len(text), start + draw(st.integers(1, 8)))
        headings.append(HeadingSpan(draw(st.integers(1, 4)), text[start:end], start, end))
    return ParsedDocument(text=text, mime_type="text/plain", headings=tuple(headings))


@settings(max_examples=300, deadline=None)
@given(doc=documents(), size=st.integers(1, 24), overlap_ratio=st.floats(0, 0.9))
def test_property_word_tokenizer(doc: ParsedDocument, size: int, overlap_ratio: float) -> None:
    overlap = int(size * overlap_ratio)
    tok = WordTokenizer()
    chunks = Chunker(tok, size, overlap).chunk(doc)
    if not tok.token_spans(doc.text):
        assert chunks == []
        return
    check(doc, chunks, size)
    assert chunks == Chunker(tok, size, overlap).chunk(doc)
    # nothing is lost: every token of the text lies inside some chunk
    for start, end in tok.token_spans(doc.text):
        assert any(c.char_start <= start and end <= c.char_end for c in chunks)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents(), size=st.integers(2, 40), overlap=st.integers(0, 8))
def test_property_bundled_tokenizer(tokenizer: HFTokenizer, doc: ParsedDocument, size: int, overlap: int) -> None:
    chunks = Chunker(tokenizer, size, min(overlap, size - 1)).chunk(doc)
    if chunks:
        check(doc, chunks, size)
