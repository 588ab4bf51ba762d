"""Verify stage: align each answer sentence to the source span that supports it, apply a policy to
the unsupported ones, and abstain when the sources do not answer the question."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from kag.errors import ConfigurationError
from kag.models.embedder import Embedder
from kag.records import Citation, SentenceVerdict, Source, Verification, page_range
from pipelines.multihop import names_in

ABSTENTION = "The sources do not answer this."
POLICIES = ("flag", "drop", "extractive")
QUOTE_TIE = 0.03  # quotes this close to the best score count as equally good; the shortest is shown

# Reasons start with a fixed phrase so callers can branch on `reason.startswith(...)`.
REASON_NO_SOURCES = "no sources"
REASON_MODEL_ABSTAINED = "model abstained"
REASON_LOW_EVIDENCE = "low evidence"
REASON_NOTHING_SUPPORTED = "no supported sentence"
REASON_UNGROUNDED = "ungrounded answer"
REASON_UNSEEN_TERMS = "question not covered"
REASON_JUDGED_UNANSWERABLE = "judged unanswerable"

# ---------------------------------------------------------------------------------------------
# sentence splitting

# `[1]`, `[1, 2]`, `[Source 3]`, `[1-2]`: how models cite numbered sources
_MARKER = r"\[\s*(?:sources?\s*)?\d+(?:\s*[,;\u2013-]\s*(?:sources?\s*)?\d+)*\s*\]"
_MARKER_RE = re.compile(_MARKER, re.IGNORECASE)
_TERMINAL_RE = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?:[ \t]*" + _MARKER + r")*", re.IGNORECASE)
_BULLET_RE = re.compile(r"[ \t]*(?:[-*\u2022]|\d{1,2}[.)])[ \t]+")
# paragraph breaks and list items always end a sentence, whatever the punctuation says
_BLOCK_BREAK_RE = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:[-*\u2022]|\d{1,2}[.)])[ \t]+)")
_WORD_BEFORE_RE = re.compile(r"[\w.]+$")
_INITIALISM_RE = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # e.g, i.e, U.S, a.m

# abbreviations that never end a sentence, even before a capital ("Dr. Smith", "e.g. Paris")
_NEVER_FINAL = frozenset(
    "mr mrs ms dr prof sr jr st mt gen col capt lt sgt rev hon gov sen rep pres e.g i.e eg ie vs cf "
    "approx ca al fig figs eq dept est".split()
)
# abbreviations that do not end a sentence before a number ("No. 5", "p. 12", "v. 2")
_BEFORE_NUMBER = frozenset("no nos nr p pp vol vols sec ch art ref fig figs eq ver v tab".split())


def _blocks(text: str) -> list[tuple[int, int]]:
    """Paragraphs and list items, without their bullets."""
    blocks, start = [], 0
    for m in _BLOCK_BREAK_RE.finditer(text):
        blocks.append((start, m.start()))
        start = m.end()
    blocks.append((start, len(text)))
    out = []
    for b_start, b_end in blocks:
        bullet = _BULLET_RE.match(text, b_start, b_end)
        out.append((bullet.end() if bullet else b_start, b_end))
    return out


def _is_boundary(text: str, block_start: int, m: re.Match[str], block_end: int) -> bool:
    rest = text[m.end() : block_end]
    stripped = rest.lstrip()
    if not stripped:
        return True
    if len(stripped) == len(rest):  # no space after: "3.5", "v2.1", "e.g.,"
        return False
    nxt = stripped[0]
    if nxt.islower() or nxt in ",;:":
        return False
    if "." not in m.group() or "?" in m.group() or "!" in m.group():
        return True
    before = _WORD_BEFORE_RE.search(text, block_start, m.start())
    word = before.group().rstrip(".") if before else ""
    lowered = word.lower()
    if lowered in _NEVER_FINAL or _INITIALISM_RE.fullmatch(word):
        return False
    if nxt.isdigit() and lowered in _BEFORE_NUMBER:
        return False
    # a single capital is an initial ("J. Smith"), not the end of a sentence
    return not (len(word) == 1 and word.isupper())


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """`(start, end)` of each sentence of `text`, whitespace trimmed; markers stay with their sentence."""
    spans: list[tuple[int, int]] = []
    for b_start, b_end in _blocks(text):
        start = b_start
        for m in _TERMINAL_RE.finditer(text, b_start, b_end):
            if _is_boundary(text, b_start, m, b_end):
                spans.append((start, m.end()))
                start = m.end()
        spans.append((start, b_end))
    trimmed = []
    for start, end in spans:
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if start + lead < end - trail:
            trimmed.append((start + lead, end - trail))
    return trimmed


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, whitespace trimmed."""
    return [text[s:e] for s, e in sentence_spans(text)]


@dataclass(frozen=True, slots=True)
class AnswerSentence:
    """An answer sentence: as written, without its `[n]` markers, and the numbers it cited."""

    original: str
    text: str
    cited: tuple[int, ...]


def cited_numbers(marker: str) -> tuple[int, ...]:
    """Source numbers in one marker; ranges like `[1-3]` expand."""
    numbers: list[int] = []
    for part in re.split(r"\s*[,;]\s*", marker.strip("[] ")):
        ends = [int(n) for n in re.findall(r"\d+", part)]
        if len(ends) == 2 and ends[0] <= ends[1] <= ends[0] + 20:
            numbers.extend(range(ends[0], ends[1] + 1))
        else:
            numbers.extend(ends)
    return tuple(numbers)


# "According to [2], X", "As stated in source [1]: X", "[3] says that X": attribution frames whose
# words mean nothing once the marker is gone; the claim is X
_ATTRIBUTION_RE = re.compile(
    r"^\s*(?:(?:according\s+to|as\s+(?:stated|noted|described|mentioned|shown|explained|said)\s+in|based\s+on|"
    r"per|from|in)\s+(?:the\s+)?(?:sources?\s*)?(?P<a>" + _MARKER + r"(?:\s*(?:,|and|&)\s*" + _MARKER + r")*)\s*[,:]?"
    r"|(?:the\s+)?(?:sources?\s*)?(?P<b>" + _MARKER + r")\s+(?:says|states|notes|mentions|explains|shows|reports)"
    r"(?:\s+that)?)\s*",
    re.IGNORECASE,
)


def _without_attribution(sentence: str) -> str:
    """The sentence without a leading "According to [n]," frame, its first letter capitalized."""
    m = _ATTRIBUTION_RE.match(sentence)
    if m is None or not sentence[m.end() :].strip():
        return sentence
    rest = sentence[m.end() :]
    return rest[:1].upper() + rest[1:]


_MD_HEADING_RE = re.compile(r"^[ \t]*#{1,6}[ \t]+[^\n]*$", re.MULTILINE)
_MD_EMPHASIS_RE = re.compile(r"(\*\*|__|\*(?=\S)|(?<=\S)\*|`+)")
_REPLY_LABEL_RE = re.compile(
    r"^[ \t]*(?:answerable[ \t]*:[ \t]*(?:(?:yes|no)\b[.]?[ \t]*(?:\n|$))?|answer[ \t]*:[ \t]*)", re.I | re.M
)
_YES_NO_RE = re.compile(r"^\s*(?P<word>yes|no)\b(?:\s*[.,!:;\u2013-]+\s*|\s+(?=[A-Z\[]))", re.IGNORECASE)


# what a model says about the sources rather than about the question ("The sources contain the answer."):
# an echo of the answerability line, no claim to verify
_META_RE = re.compile(
    r"(?:yes,?\s+)?(?:the\s+)?(?:provided\s+)?(?:sources?|context|passages?)\s+(?:do\s+|does\s+)?"
    r"(?:contain|answer|provide|include)s?\s+(?:the\s+)?(?:answer|information)(?:\s+to\s+(?:the|this)\s+question)?\.?",
    re.IGNORECASE,
)


def plain_answer(raw: str) -> str:
    """The model's answer as plain prose: reply labels ("Answer:"), markdown headings, emphasis and code
    marks removed, and any line that reads as a heading (short, unpunctuated, before more text) dropped.
    A heading is never an answer sentence."""
    text = _REPLY_LABEL_RE.sub("", raw)
    text = _MD_HEADING_RE.sub("", text)
    text = _MD_EMPHASIS_RE.sub("", text)
    lines = text.split("\n")
    kept = []
    for i, line in enumerate(lines):
        rest = "\n".join(lines[i + 1 :]).strip()
        if rest and is_heading(line):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def is_heading(line: str) -> bool:
    """A title-like line: few words, no sentence punctuation at its end, not a list item's text."""
    stripped = line.strip().rstrip(":")
    if not stripped or re.search(r"[.!?\]\)\"\u201d]$", stripped):
        return False
    words = stripped.split()
    return len(words) <= 8 and sum(w[:1].isupper() or w[:1].isdigit() for w in words) >= max(1, len(words) - 1)


def yes_no_lead(answer: str) -> tuple[str | None, str]:
    """("yes" | "no" | None, the rest): the conclusion a yes/no answer starts with, split from its reasons."""
    m = _YES_NO_RE.match(answer)
    if m is None:
        return None, answer
    rest = answer[m.end() :]
    return m.group("word").lower(), rest[:1].upper() + rest[1:]


def split_answer(answer: str) -> list[AnswerSentence]:
    """Answer sentences with their markers separated; empty and marker-only fragments are dropped, and
    a lead-in that ends in a colon ("The days are: [1]") is no claim at all."""
    out = []
    for start, end in sentence_spans(answer):
        original = answer[start:end]
        cited: list[int] = []
        for m in _MARKER_RE.finditer(original):
            cited.extend(n for n in cited_numbers(m.group()) if n not in cited)
        text = " ".join(_MARKER_RE.sub(" ", _without_attribution(original)).split())
        text = re.sub(r"\s+([.,;:!?\u2026])", r"\1", text)  # "days [1]." -> "days ."  -> "days."
        if text.rstrip().endswith(":") or _META_RE.fullmatch(text.strip()):
            continue
        if re.search(r"\w", text):
            out.append(AnswerSentence(original, text, tuple(cited)))
    return out


# Phrases with which a model says the sources do not hold the answer.
_REFUSAL_RE = re.compile(
    r"\bi\s+(?:do\s+not|don't|cannot|can't|am\s+not\s+able\s+to)\s+(?:know|answer|find|tell|say)"
    r"|\bi'?m\s+not\s+sure\b"
    r"|\b(?:sources?|context|documents?|passages?|text|information\s+provided|provided\s+information)\s+"
    r"(?:do|does|did)\s*(?:not|n't)\s+(?:answer|contain|mention|say|provide|specify|state|include|address|cover)"
    r"|\bnot\s+(?:(?:mentioned|found|provided|stated|given|specified|covered|available|included)\s+)?in\s+the\s+"
    r"(?:given\s+|provided\s+)?(?:sources?|context|documents?|passages?|text)\b"
    r"|\b(?:cannot|can't|can\s+not|unable\s+to)\s+(?:answer|determine|find|tell|be\s+(?:answered|determined))"
    r"|\bthere\s+is\s+no\s+(?:relevant\s+)?(?:information|mention)\b"
    r"|\bno\s+(?:relevant\s+)?information\s+(?:is|was)\s+(?:given|provided|available)",
    re.IGNORECASE,
)


def is_refusal(sentence: str) -> bool:
    """Whether the sentence says the sources (or the model) cannot answer."""
    return bool(_REFUSAL_RE.search(sentence.replace("\u2019", "'")))


# ---------------------------------------------------------------------------------------------
# lexical evidence

_TOKEN_RE = re.compile(r"\w+(?:[.,]\d+)*")
_STOPWORDS = frozenset(
    """a an the and or but nor so yet if then than that this these those there here of in on at to for from by
    with without within into onto upon about above below over under between among through during before after
    since until as per via is are was were be been being am do does did doing done have has had having will would
    shall should can could may might must it its it's they them their theirs he him his she her hers we us our
    ours you your yours i me my mine who whom whose which what when where why how whether also only just very
    too more most less least much many some any each every all both either neither no not such other another
    same own again further once one s t don doesn didn isn aren wasn weren won wouldn can't cannot
    according source sources answer answers question passage context text document documents mention mentions
    mentioned state states stated say says said provide provides provided information specifically namely
    however therefore thus""".split()
)
_NUMBER_WEIGHT = 2.0  # numbers and names carry the facts a model gets wrong
_NAME_WEIGHT = 1.5


def _stem(word: str) -> str:
    """A light suffix stripper: enough to match plural/tense variants, applied to both sides alike."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if word[-1] == word[-2] and word[-1] not in "lsz":  # "shipped" -> "ship"
                word = word[:-1]
            break
    if len(word) > 3 and word[-1] == "e":
        word = word[:-1]
    if len(word) > 3 and word[-1] == "y":
        word = word[:-1] + "i"
    return word


def _weighted_tokens(text: str) -> Iterator[tuple[str, str, float]]:
    """(surface form, token, weight) of each content word of `text`, in order."""
    for index, m in enumerate(_TOKEN_RE.finditer(text)):
        raw = m.group()
        if any(ch.isdigit() for ch in raw):
            yield raw, raw.replace(",", "").lower(), _NUMBER_WEIGHT
        else:
            lowered = _fold(raw.lower())
            if len(lowered) < 2 or lowered in _STOPWORDS:
                continue
            yield raw, _stem(lowered), _NAME_WEIGHT if index > 0 and raw[0].isupper() else 1.0


def content_tokens(text: str) -> dict[str, float]:
    """Content tokens of `text` with their weights: numbers exact and heavy, names heavier than words."""
    tokens: dict[str, float] = {}
    for _, token, weight in _weighted_tokens(text):
        tokens[token] = max(weight, tokens.get(token, 0.0))
    return tokens


_NUMBER_WORDS = {
    str(n): word
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}


def _fold(token: str) -> str:
    """`token` without accents: "Hervé" and "Herve" are one name."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", token) if not unicodedata.combining(ch))


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether `a` becomes `b` by one insertion, deletion, substitution or swap of neighbours."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) < len(b):
        return a[i:] == b[i + 1 :]
    return a[i + 1 :] == b[i + 1 :] or (a[i + 2 :] == b[i + 2 :] and a[i : i + 2] == b[i : i + 2][::-1])


def _mentioned(raw: str, token: str, pool: set[str], words: set[str]) -> bool:
    """Whether a name or number of the question appears in the sources (`pool`: their content tokens,
    `words`: their words as written, lowercased and unaccented), allowing for how spellings vary: a
    derived form sharing 5+ letters from the start ("Californian", "California"), one typo in a word
    of 6+ letters ("Hatmanis", "Hartmanis"), a small number spelled out ("4", "four"). Otherwise a word
    with a digit must match exactly: a swapped year or model number is one character away."""
    if token in pool:
        return True
    if any(ch.isdigit() for ch in token):  # numbers and codes ("A320", "INC-3107") only exactly
        return _NUMBER_WORDS.get(token, "") in words
    word = _fold(raw.lower())
    for other in words:
        shorter = min(len(word), len(other))
        if shorter >= 5 and (word.startswith(other) or other.startswith(word)):
            return True
        if shorter >= 5 and max(len(word), len(other)) >= 6 and _one_edit_apart(word, other):
            return True
    return False


def unseen_question_terms(question: str, source_texts: Sequence[str]) -> list[str]:
    """The names and numbers of the question that no source contains, as the question spells them.

    A question about a name or a number the sources never mention is about something they do not
    cover: SQuAD 2.0's unanswerable questions are often the answerable ones with one name swapped."""
    pool: set[str] = set()
    words: set[str] = set()
    for text in source_texts:
        pool |= set(content_tokens(text))
        words |= {_fold(m.group().lower()) for m in _TOKEN_RE.finditer(text)}
    unseen = [
        raw
        for raw, token, weight in _weighted_tokens(question)
        if weight > 1.0 and not _mentioned(raw, token, pool, words)
    ]
    return list(dict.fromkeys(unseen))


def novel_weight(claim: dict[str, float], allowed: set[str]) -> float:
    """Weight of the claim's content tokens found neither in the evidence nor in the question: what the
    sentence adds that nothing shown to the model said."""
    return sum(w for t, w in claim.items() if t not in allowed)


_CHOICE_RE = re.compile(
    r"^\s*(?:is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b|\s(?:or|vs\.?|versus)\s",
    re.IGNORECASE,
)


def is_choice_question(question: str) -> bool:
    """A yes/no question ("Are both X and Y genera?") or a choice between named options ("X or Y?")."""
    return bool(_CHOICE_RE.search(question))


def answer_grounding(sentences: Sequence[str], question: str, source_texts: Sequence[str]) -> float:
    """How much of what the answer adds to the question the sources contain: the best sentence's weighted
    share of content tokens outside the question found anywhere in the sources (0 when nothing is added)."""
    asked = set(content_tokens(question))
    pool: set[str] = set()
    for text in source_texts:
        pool |= set(content_tokens(text))
    best = 0.0
    for sentence in sentences:
        added = {t: w for t, w in content_tokens(sentence).items() if t not in asked}
        if added:
            best = max(best, sum(w for t, w in added.items() if t in pool) / sum(added.values()))
    return best


def lexical_support(claim: dict[str, float], span: set[str]) -> float:
    """Weighted share of the claim's content tokens found in the span, crushed by every missing number."""
    total = sum(claim.values())
    if not total:
        return 0.0
    found = sum(w for t, w in claim.items() if t in span)
    numbers = [t for t in claim if any(ch.isdigit() for ch in t)]
    if not numbers:
        return found / total
    # a wrong number is the typical hallucination: one missing number of one zeroes the lexical evidence
    number_share = sum(t in span for t in numbers) / len(numbers)
    return (found / total) * number_share**2


# ---------------------------------------------------------------------------------------------
# the verifier


@dataclass(frozen=True, slots=True)
class _Span:
    source: Source
    start: int  # relative to the chunk text
    end: int
    single: bool  # one sentence, not a two-sentence window

    @property
    def text(self) -> str:
        return self.source.hit.text[self.start : self.end]

    def citation(self) -> Citation:
        hit = self.source.hit
        start, end = hit.char_start + self.start, hit.char_start + self.end
        # the quote's own pages: a chunk that straddles a page break starts on the page before
        pages = page_range(hit.page_spans, start, end)
        return Citation(
            source_number=self.source.number,
            document_id=hit.document_id,
            chunk_id=hit.chunk_id,
            title=hit.title,
            page=pages[0] if pages is not None else hit.page,
            char_start=start,
            char_end=end,
            quote=self.text,
            pages=pages,
        )


def _pieces(text: str) -> list[tuple[int, int]]:
    """Sentences of a source text, with header blocks taken apart: a "sentence" made of several lines
    that do not end in punctuation (a PDF title block, a table row) is split into its lines, and
    heading-like lines are left out. No heading or header block is ever quoted as a sentence."""
    out: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        piece = text[start:end]
        if "\n" in piece:
            lines = [(m.start() + start, m.end() + start) for m in re.finditer(r"[^\n]+", piece)]
            unpunctuated = sum(not re.search(r"[.!?;:,]$", text[a:b].strip()) for a, b in lines[:-1])
            if unpunctuated >= max(1, (len(lines) - 1) // 2):
                for a, b in lines:
                    seg = text[a:b]
                    lead, trail = len(seg) - len(seg.lstrip()), len(seg) - len(seg.rstrip())
                    if a + lead < b - trail and not is_heading(seg):
                        out.append((a + lead, b - trail))
                continue
        if not is_heading(piece):
            out.append((start, end))
    return out


def candidate_spans(sources: Sequence[Source]) -> list[_Span]:
    """Every sentence of every source chunk (headings and header blocks excluded), plus each window of
    two consecutive sentences."""
    spans: list[_Span] = []
    for source in sources:
        sentences = _pieces(source.hit.text)
        spans.extend(_Span(source, s, e, True) for s, e in sentences)
        spans.extend(_Span(source, a[0], b[1], False) for a, b in zip(sentences, sentences[1:], strict=False))
    return spans


# ---------------------------------------------------------------------------------------------
# polarity and bindings: what word overlap cannot see

_NEGATION_RE = re.compile(
    r"\b(?:not|no|never|none|neither|nor|without|cannot|nothing|nobody|nowhere)\b|n't\b", re.IGNORECASE
)


def negated(text: str) -> bool:
    """Whether the text carries a negation cue ("not", "never", "n't", "without", ...)."""
    return bool(_NEGATION_RE.search(text.replace("\u2019", "'")))


def polarity_clash(claim: str, evidence: str) -> bool:
    """A claim that negates what its evidence states, or states what the evidence negates: "are not
    anchor days" against "are anchor days" shares every content word and says the opposite."""
    return negated(claim) != negated(evidence)


_RAW_WORD_RE = re.compile(r"[\w'-]+")


def _content_positions(text: str) -> list[tuple[str, float]]:
    """(token, weight) of every word of `text` in order; stopwords kept as ("", 0) placeholders so
    adjacency in the text is adjacency in the list."""
    out: list[tuple[str, float]] = []
    for index, m in enumerate(_RAW_WORD_RE.finditer(text)):
        raw = m.group().strip("'-")
        if not raw:
            continue
        tokens = list(_weighted_tokens(raw))
        if not tokens:
            out.append(("", 0.0))
            continue
        _, token, weight = tokens[0]
        if weight == _NAME_WEIGHT and index == 0:
            weight = 1.0
        elif raw[:1].isupper() and weight == 1.0 and index > 0:
            weight = _NAME_WEIGHT
        out.append((token, weight))
    return out


def _clauses(text: str) -> list[str]:
    return [c for c in re.split(r"[.;:!?]\s|,\s+(?:which|and|but|while|so)\b", text) if c.strip()]


def number_clash(claim: str, evidence: str, claim_window: int = 2, evidence_window: int = 6) -> list[tuple[str, str]]:
    """(number, word) pairs where the claim binds a number to words ("18 days per month") that the evidence
    never writes after that number ("1.5 days per month, which adds up to 18 days per year"): every number
    of the claim is in the evidence, and the fact is still wrong."""
    after: dict[str, list[set[str]]] = {}
    for clause in _clauses(evidence):
        seq = [t for t, w in _content_positions(clause) if t]
        for i, token in enumerate(seq):
            if any(ch.isdigit() for ch in token):
                after.setdefault(token, []).append(set(seq[i + 1 : i + 1 + evidence_window]))
    clashes: list[tuple[str, str]] = []
    for clause in _clauses(claim):
        seq = [t for t, w in _content_positions(clause) if t]
        for i, token in enumerate(seq):
            if not any(ch.isdigit() for ch in token) or token not in after:
                continue
            bound = [t for t in seq[i + 1 : i + 1 + claim_window] if not any(ch.isdigit() for ch in t)]
            if bound and not any(all(t in window for t in bound) for window in after[token]):
                clashes.extend((token, t) for t in bound if not any(t in window for window in after[token]))
    return clashes


def binding_clash(claim: str, evidence: str, window: int = 4) -> list[tuple[str, str]]:
    """(name, word) pairs the claim writes side by side ("the Magpie database") while the evidence has
    both but never near each other ("Magpie is the broker ... the billing database"): a swapped entity
    or relation that word overlap alone passes."""
    claim_seq = _content_positions(claim)
    span_seq = _content_positions(evidence)
    where: dict[str, list[int]] = {}
    for i, (token, _) in enumerate(span_seq):
        if token:
            where.setdefault(token, []).append(i)
    clashes: list[tuple[str, str]] = []
    i = 0
    while i < len(claim_seq):
        if claim_seq[i][1] != _NAME_WEIGHT:
            i += 1
            continue
        # a run of capitalised words is one name ("Osprey API gateway": the name is Osprey API)
        j = i
        while j + 1 < len(claim_seq) and claim_seq[j + 1][1] == _NAME_WEIGHT:
            j += 1
        group = [t for t, _ in claim_seq[i : j + 1] if t in where]
        for k in (i - 1, j + 1):
            if not group or not 0 <= k < len(claim_seq):
                continue
            word, word_weight = claim_seq[k]
            if not word or word_weight != 1.0 or word not in where:
                continue
            near = any(abs(a - b) <= window for t in group for a in where[t] for b in where[word])
            if not near:
                clashes.append((group[-1] if k > j else group[0], word))
        i = j + 1
    return clashes


def _with_markers(text: str, numbers: Sequence[int]) -> str:
    marker = "".join(f"[{n}]" for n in numbers)
    if not marker:
        return text
    m = re.search(r"[.!?]+$", text)
    return f"{text[: m.start()]} {marker}{m.group()}" if m else f"{text} {marker}"


class Verifier:
    """Aligns answer sentences to supporting source spans; flags, drops or replaces the rest; abstains."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        policy: str = "extractive",
        support_threshold: float = 0.6,
        abstain_threshold: float = 0.45,
        lexical_weight: float = 0.5,
        novel_allowance: float = 0.0,
        replace_min_score: float = 0.45,
        min_grounding: float = 0.6,
        require_question_terms: bool = True,
    ) -> None:
        if policy not in POLICIES:
            raise ConfigurationError(
                f"unknown verify policy {policy!r}", hint=f"set KAG_VERIFY_POLICY to one of {', '.join(POLICIES)}"
            )
        for name, value in (
            ("support_threshold", support_threshold),
            ("abstain_threshold", abstain_threshold),
            ("lexical_weight", lexical_weight),
            ("replace_min_score", replace_min_score),
            ("min_grounding", min_grounding),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} must be within [0, 1], got {value}")
        self.embedder = embedder
        self.policy = policy
        self.support_threshold = support_threshold
        self.abstain_threshold = abstain_threshold
        #: least score of a hop's sentence about its entity for it to be quoted (with_hop_evidence)
        self.hop_floor = 0.25
        #: share of the question's words the quotes shown leave unsaid above which a premise is quoted
        self.premise_share = 0.4
        self.lexical_weight = lexical_weight
        # 0 (the default): a sentence may add no content word to its evidence; "1.5 days of paid sick leave"
        # against "1.5 days of PTO" is unsupported. 1 lets one ordinary word of paraphrase through
        self.novel_allowance = novel_allowance
        self.replace_min_score = replace_min_score
        # an answer whose additions to the question appear nowhere in the sources was not found there:
        # quoting the passage nearest the question instead would answer a question the sources may not answer
        self.min_grounding = min_grounding
        # a name or number of the question that no source mentions: the sources are about something else
        self.require_question_terms = require_question_terms

    def score_matrix(self, texts: Sequence[str], spans: Sequence[_Span]) -> np.ndarray:
        """`w * lexical + (1 - w) * semantic` for every (text, span) pair; one embed call per side."""
        return self.score_matrices(texts, spans)[0]

    def score_matrices(self, texts: Sequence[str], spans: Sequence[_Span]) -> tuple[np.ndarray, np.ndarray]:
        """The combined scores and the semantic (embedding cosine) part alone, per (text, span) pair."""
        if not texts or not spans:
            empty = np.zeros((len(texts), len(spans)), dtype=np.float64)
            return empty, empty
        unique = list(dict.fromkeys(s.text for s in spans))
        row_of = {t: i for i, t in enumerate(unique)}
        text_vecs = np.asarray(self.embedder.embed(list(texts)), dtype=np.float64)
        span_vecs = np.asarray(self.embedder.embed(unique), dtype=np.float64)
        semantic = np.clip(text_vecs @ span_vecs.T, 0.0, 1.0)[:, [row_of[s.text] for s in spans]]
        span_tokens = {t: set(content_tokens(t)) for t in unique}
        lexical = np.array(
            [[lexical_support(content_tokens(text), span_tokens[s.text]) for s in spans] for text in texts]
        )
        return self.lexical_weight * lexical + (1.0 - self.lexical_weight) * semantic, semantic

    def evidence(self, question: str, sources: Sequence[Source]) -> float:
        """The best question-to-span score: how well the sources could answer the question at all."""
        spans = candidate_spans(sources)
        return float(self.score_matrix([question], spans).max()) if spans else 0.0

    def unseen_terms(self, question: str, sources: Sequence[Source]) -> list[str]:
        """The question's names and numbers that no source's text or title contains ([] with the check
        off): `verify` abstains on any, whatever the answer, so the pipeline need not generate one."""
        if not self.require_question_terms:
            return []
        return unseen_question_terms(question, [t for s in sources for t in (s.hit.text, s.hit.title or "")])

    def verify(self, question: str, answer: str, sources: Sequence[Source]) -> Verification:
        """Verdicts for every answer sentence, and the answer as the policy leaves it, or an abstention."""
        conclusion, answer = yes_no_lead(plain_answer(answer))
        sentences = split_answer(answer)
        if not sources:
            return self._abstain(self._unscored(sentences), f"{REASON_NO_SOURCES}: nothing was retrieved")
        unseen = self.unseen_terms(question, sources)
        if unseen:
            return self._abstain(
                self._unscored(sentences),
                f"{REASON_UNSEEN_TERMS}: no source mentions " + ", ".join(repr(t) for t in unseen),
            )
        if not sentences or all(is_refusal(s.text) for s in sentences):
            return self._abstain(
                self._unscored(sentences), f"{REASON_MODEL_ABSTAINED}: the answer says the sources do not answer"
            )
        claims = [s.text for s in sentences if not is_refusal(s.text)]
        grounding = answer_grounding(claims, question, [s.hit.text for s in sources])
        # a choice ("X or Y?", a yes/no question) is answered with the question's own words: an answer
        # that adds nothing to it is then no sign of invention, and its sentences are still aligned below
        adds_nothing = not any(set(content_tokens(c)) - set(content_tokens(question)) for c in claims)
        if grounding < self.min_grounding and not (adds_nothing and is_choice_question(question)):
            return self._abstain(
                self._unscored(sentences),
                f"{REASON_UNGROUNDED}: {grounding:.2f} of what the answer adds to the question is in the sources, "
                f"below {self.min_grounding:.2f}",
            )
        by_number: dict[int, Source] = {}
        for source in sources:
            by_number.setdefault(source.number, source)
        spans = candidate_spans(sources)
        if not spans:
            return self._abstain(self._unscored(sentences), f"{REASON_NO_SOURCES}: the sources hold no text")
        scores, semantic = self.score_matrices([question] + [s.text for s in sentences], spans)
        question_scores, sentence_scores = scores[0], scores[1:]
        singles = np.array([s.single for s in spans])
        question_tokens = set(content_tokens(question))
        shown_quotes: set[tuple[int, int, int]] = set()
        verdicts = []
        for sentence, row, meaning in zip(sentences, sentence_scores, semantic[1:], strict=True):
            if is_refusal(sentence.text):
                verdicts.append(SentenceVerdict(sentence.text, sentence.original, False, 0.0, "dropped"))
                continue
            cited = [n for n in sentence.cited if n in by_number]
            # score against what the sentence cites; an uncited or wrongly cited one against everything
            eligible = np.array([s.source.number in cited for s in spans]) if cited else np.ones(len(spans), bool)
            best = int(np.argmax(np.where(eligible, row, -1.0)))
            score = float(row[best])
            span = spans[best]
            known = set(content_tokens(span.text)) | question_tokens | set(content_tokens(span.source.hit.title))
            if novel_weight(content_tokens(sentence.text), known) > self.novel_allowance:
                score = min(score, self.support_threshold - 1e-6)  # the sentence claims more than its evidence
            elif (
                polarity_clash(sentence.text, span.text)
                or binding_clash(sentence.text, span.text)
                or number_clash(sentence.text, span.text)
            ):
                score = min(score, self.support_threshold - 1e-6)  # same words, opposite or swapped meaning
            if score >= self.support_threshold:
                citation = spans[best].citation()
                text = _with_markers(sentence.text, [citation.source_number])
                verdicts.append(SentenceVerdict(text, sentence.original, True, score, "kept", (citation,)))
            elif self.policy == "flag":
                verdicts.append(SentenceVerdict(sentence.text, sentence.original, False, score, "flagged"))
            elif self.policy == "extractive":
                verdicts.append(
                    self._replace(sentence, score, row, meaning, question_scores, spans, singles, shown_quotes)
                )
            else:
                verdicts.append(SentenceVerdict(sentence.text, sentence.original, False, score, "dropped"))
        evidence = float(question_scores.max())
        if evidence < self.abstain_threshold:
            return self._abstain(
                verdicts,
                f"{REASON_LOW_EVIDENCE}: the best source span scores {evidence:.2f} against the question, "
                f"below {self.abstain_threshold:.2f}",
            )
        shown = [v for v in verdicts if v.action != "dropped"]
        if not shown:
            return self._abstain(verdicts, f"{REASON_NOTHING_SUPPORTED}: no answer sentence is backed by the sources")
        text = " ".join(v.text for v in shown)
        if conclusion is not None:
            # the yes/no is the model's conclusion from the shown sentences, not a claim a span can back
            text = f"{conclusion.capitalize()}. {text}"
        return Verification(text, tuple(verdicts), False, self.policy, conclusion=conclusion)

    def _replace(
        self,
        sentence: AnswerSentence,
        score: float,
        row: np.ndarray,
        meaning: np.ndarray,
        question_scores: np.ndarray,
        spans: Sequence[_Span],
        singles: np.ndarray,
        shown: set[tuple[int, int, int]],
    ) -> SentenceVerdict:
        """The source sentence that best supports the answer sentence, else the one that best answers the
        question among those still close to what the model said; else a drop."""
        fresh = singles & np.array([(s.source.number, s.start, s.end) not in shown for s in spans])
        # a quote picked for the question alone must still mean something like the model's sentence (by
        # embedding alone: a wrong number zeroes the lexical part, and correcting it is the point); otherwise it
        # answers a question the sources may not answer (the near-miss sentence of an unanswerable one)
        related = fresh & (meaning >= self.replace_min_score)
        lengths = np.array([s.end - s.start for s in spans])
        for pool, scored, bar in (
            (fresh, row, self.support_threshold),
            (related, question_scores, self.abstain_threshold),
        ):
            masked = np.where(pool, scored, -1.0)
            best = int(np.argmax(masked))
            if masked[best] >= bar:
                # of the quotes scoring within QUOTE_TIE of the best, the shortest: the smallest
                # sentence that supports the claim, not a long one that also mentions it
                close = np.flatnonzero(masked >= max(bar, masked[best] - QUOTE_TIE))
                best = int(close[np.argmin(lengths[close])])
                span = spans[best]
                shown.add((span.source.number, span.start, span.end))
                citation = span.citation()
                text = f'"{" ".join(_MD_EMPHASIS_RE.sub("", span.text).split())}" [{citation.source_number}]'
                # the shown text is the source's own words (markdown emphasis rendered away; the citation
                # keeps the exact characters), so it is supported by construction
                return SentenceVerdict(text, sentence.original, True, float(masked[best]), "replaced", (citation,))
        return SentenceVerdict(sentence.text, sentence.original, False, score, "dropped")

    def with_hop_evidence(
        self,
        question: str,
        verification: Verification,
        hops: Sequence[tuple[str | None, Sequence[Source]]],
        sources: Sequence[Source] = (),
    ) -> Verification:
        """A multi-hop answer with the evidence of every link cited (quotes added after the answer, verdict
        action "added"; they are kag's, never counted as the model's sentences):

        - each hop (entity, its sources) whose documents the answer does not cite gets the sentence of its
          sources that names its entity and best supports the question and the answer (a comparison: each
          entity's fact; a bridge: the passage naming the bridge entity, and the one about it);
        - the premise: where the quotes shown leave much of the question unsaid, a name of it among that
          ("the woman who portrayed Corliss Archer in Kiss and Tell" behind "Shirley Temple served as Chief
          of Protocol"), the sentence of another document in `sources` that names it and says most of the
          rest is quoted, when it says at least half of it.
        """
        if verification.abstained:
            return verification
        cited = {c.document_id for c in verification.citations}
        shown = " ".join(_MARKER_RE.sub("", v.text) for v in verification.sentences if v.action != "dropped")
        probe = f"{question} {shown}"
        added: list[SentenceVerdict] = []

        def add(span: _Span, score: float) -> None:
            citation = span.citation()
            text = f'"{" ".join(_MD_EMPHASIS_RE.sub("", span.text).split())}" [{citation.source_number}]'
            added.append(SentenceVerdict(text, "", True, float(score), "added", (citation,)))
            cited.add(citation.document_id)

        for entity, hop in hops:
            if not hop or any(s.hit.document_id in cited for s in hop):
                continue
            spans = [span for span in candidate_spans(hop) if span.single]
            if entity:  # a sentence about the hop's entity, not any sentence of its passages
                key = entity.lower()
                spans = [span for span in spans if key in span.text.lower()] or [
                    span for span in spans if key in (span.source.hit.title or "").lower()
                ]
            if not spans:
                continue
            scores = self.score_matrix([probe], spans)[0]
            best = int(np.argmax(scores))
            if scores[best] >= self.hop_floor:
                add(spans[best], scores[best])

        asked = content_tokens(question)
        total = sum(asked.values())
        said: set[str] = set()
        for citation in (*verification.citations, *(c for v in added for c in v.citations)):
            said |= set(content_tokens(citation.quote))
        unsaid = {t: w for t, w in asked.items() if t not in said}
        # the premise is about something the question names and the quotes shown do not
        unsaid_names = [n.lower() for n in names_in(question) if not set(content_tokens(n)) <= said]
        if unsaid_names and total and sum(unsaid.values()) >= self.premise_share * total:
            best_span, best_share = None, 0.0
            for span in candidate_spans([s for s in sources if s.hit.document_id not in cited]):
                if not span.single or not any(n in span.text.lower() for n in unsaid_names):
                    continue
                tokens = set(content_tokens(span.text))
                hit = [t for t in unsaid if t in tokens]
                share = sum(unsaid[t] for t in hit) / sum(unsaid.values())
                if len(hit) >= 2 and share > best_share:
                    best_span, best_share = span, share
            if best_span is not None and best_share >= 0.5:
                add(best_span, best_share)
        if not added:
            return verification
        return dataclasses.replace(
            verification,
            answer=" ".join([verification.answer, *(v.text for v in added)]),
            sentences=(*verification.sentences, *added),
        )

    def abstention(self, reason: str) -> Verification:
        """The abstention for a reason decided before any answer was written (the answerability probe)."""
        return self._abstain([], reason)

    @staticmethod
    def _unscored(sentences: Sequence[AnswerSentence]) -> list[SentenceVerdict]:
        return [SentenceVerdict(s.text, s.original, False, 0.0, "dropped") for s in sentences]

    def _abstain(self, verdicts: Sequence[SentenceVerdict], reason: str) -> Verification:
        # nothing of the model's answer is shown, so no verdict may claim it was kept
        hidden = tuple(v if v.action == "dropped" else dataclasses.replace(v, action="dropped") for v in verdicts)
        return Verification(ABSTENTION, hidden, True, self.policy, reason)
