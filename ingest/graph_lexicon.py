"""Word lists and token-level rules that turn a spaCy parse into entities and typed relations."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from kag.stores.graph import RELATION_TYPES

# NER labels that name amounts and times, not things a question is about.
SKIPPED_NER_LABELS = frozenset({"CARDINAL", "ORDINAL", "QUANTITY", "PERCENT", "MONEY", "DATE", "TIME"})

KEYPHRASE_LABEL = "KEYPHRASE"

# Nouns that carry a relation ("part of", "an example of") rather than name a thing; as a
# keyphrase on their own they would become hubs linking everything.
RELATIONAL_NOUNS = frozenset(
    {
        "part", "type", "kind", "sort", "form", "instance", "example", "member", "subset",
        "component", "piece", "variant", "version", "way", "lot", "number", "thing", "use",
        "opposite", "inverse", "antonym", "antagonist",
    }
)  # fmt: skip

# Phrase -> (relation type, inverse). The phrase is the verb lemma, then its particle, then the
# preposition that reaches the object ("depend on"); copulas are "be" + the predicate word
# ("be part of", "be similar to"). inverse=True means the object is the relation's source.
_ACTIVE: dict[str, tuple[str, bool]] = {}


def _add(relation_type: str, *phrases: str, inverse: bool = False) -> None:
    if relation_type not in RELATION_TYPES:
        raise ValueError(f"{relation_type!r} is not a relation type of the ontology")
    for phrase in phrases:
        _ACTIVE[phrase] = (relation_type, inverse)


# hierarchy
_add("IsA", "be", "be type of", "be kind of", "be sort of", "be form of", "be subset of", "be variant of")
_add("PartOf", "be part of", "be component of", "be member of", "belong to", "be piece of")
_add("InstanceOf", "be instance of", "be example of")
# function
_add("Causes", "cause", "lead to", "result in", "trigger", "produce", "induce", "be cause of")
_add("Enables", "enable", "allow", "let", "permit", "empower", "make possible")
_add("Prevents", "prevent", "block", "stop", "avoid", "inhibit", "forbid", "prohibit", "protect against")
_add("Requires", "require", "need", "demand", "call for")
# structure
# Not "have": "X has a strong effect" is no containment, and it is the commonest verb there is.
_add("Contains", "contain", "include", "consist of", "comprise", "be composed of", "be made of")
_add("Contains", "be contained in", "be included in", inverse=True)
# Composes(part, whole) is Contains read from the part: "amino acids make up proteins".
_add("Composes", "make up", "compose", "constitute", "be constituent of", "be building block of")
_add("DependsOn", "depend on", "be dependent on", "be based on")
_add("Connects", "connect", "connect to", "connect with", "link", "link to", "link with",
     "integrate with", "be connected to", "be linked to", "be integrated with", "interface with")  # fmt: skip
# semantics
_add("SimilarTo", "resemble", "be similar to", "be like", "be analogous to", "be comparable to")
_add("OppositeTo", "oppose", "counteract", "antagonize", "contradict", "be opposite of", "be opposite to",
     "be inverse of", "be antonym of", "be antagonist of", "be contrary to", "be opposed to")  # fmt: skip
# Passives come with the agent rule: "diet is affected by income" is Influences(income, diet).
_add("Influences", "influence", "affect", "regulate", "modulate", "shape", "impact")
# technique
_add("Implements", "implement", "realize", "be implementation of")
_add("Extends", "extend", "build on", "build upon", "inherit", "inherit from", "be built on",
     "be extension of", "generalize")  # fmt: skip
_add("Uses", "use", "utilize", "rely on", "run on", "employ", "leverage", "call", "make use of",
     "invoke", "consume")  # fmt: skip
# Not "reduce"/"lower": "reduces mortality" is no optimization of mortality.
_add("Optimizes", "optimize", "improve", "speed up", "accelerate", "boost", "enhance", "tune")

PHRASE_RELATIONS = MappingProxyType(_ACTIVE)

# Passive voice with a "by" agent swaps the roles: "latency is improved by caching" is
# Optimizes(caching, latency). These prepositions introduce the agent when spaCy tags it prep.
AGENT_PREPOSITIONS = frozenset({"by"})

# Dependency labels of a verb's arguments.
SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj"})
OBJECT_DEPS = frozenset({"dobj", "attr", "oprd"})
OBJECT_OF_PREP_DEPS = frozenset({"pobj", "pcomp"})
# Where a token stands as a verb's or preposition's argument, so names a thing (when nominal).
ARGUMENT_DEPS = frozenset({"nsubj", "nsubjpass", "dobj", "pobj", "pcomp", "attr"})
NEGATING_DETERMINERS = frozenset({"no", "neither", "nor"})

# -- phrase edges and acronyms ----------------------------------------------------------------

EDGE_STRIP_POS = frozenset({"DET", "PRON", "PUNCT", "CCONJ", "ADP", "PART", "SCONJ", "SPACE", "SYM", "AUX"})
POSSESSIVE_TAGS = frozenset({"POS", "PRP$", "WP$"})
PLURAL_TAGS = frozenset({"NNS", "NNPS"})
KEEP_PLURAL = frozenset({"data", "media", "news", "series", "species", "analytics"})
# A plural the lemmatizer does not know is singularized by its ending unless it ends like a
# singular Latin or Greek word ("bacillus", "analysis", "access").
UNKNOWN_SINGULAR_ENDINGS = ("ss", "us", "is", "ous", "ics")
ACRONYM = re.compile(r"^(?=(?:.*[A-Z]){2})[A-Z0-9][A-Za-z0-9&-]{1,9}$")
PLURAL_ACRONYM = re.compile(r"^[A-Z0-9]{2,}s$")
EDGE_PUNCT = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum()) + "\u2018\u2019\u201c\u201d\u2013"
JOINERS = frozenset({"-", "\u2010", "\u2011", "/", "&"})  # punctuation inside a word: "two-factor"
MAX_PHRASE_WORDS = 4


def trim_phrase(doc: Any, start: int, end: int, *, name: bool = False) -> tuple[int, int]:
    """Strip determiners, pronouns, stopwords, possessors and punctuation at a phrase's edges."""
    if name:  # a named entity keeps its stopwords ("US", "The Who" stays "Who" at worst)
        while start < end and (doc[start].pos_ in ("DET", "PUNCT", "SPACE") or doc[start].tag_ in POSSESSIVE_TAGS):
            start += 1
        while end > start and (doc[end - 1].pos_ in ("PUNCT", "SPACE") or doc[end - 1].tag_ in POSSESSIVE_TAGS):
            end -= 1
        return start, end
    for i in range(start, end):
        if doc[i].tag_ in POSSESSIVE_TAGS:
            start = i + 1  # "Google's search engine" -> "search engine"
    while start < end and _strippable(doc[start], leading=True, next_token=doc[start + 1] if start + 1 < end else None):
        start += 1
    while (
        end > start and _strippable(doc[end - 1], leading=False, next_token=None) and not _hyphen_tail(doc, start, end)
    ):
        end -= 1
    words = [i for i in range(start, end) if not doc[i].is_punct]
    while len(words) > MAX_PHRASE_WORDS:
        # Too long: drop leading modifiers, never splitting a hyphenated word.
        start = words[len(words) - MAX_PHRASE_WORDS]
        while start > 0 and start < end and (doc[start].is_punct or not doc[start - 1].whitespace_):
            start += 1
        words = [i for i in range(start, end) if not doc[i].is_punct]
    return start, end


def _strippable(token: Any, *, leading: bool, next_token: Any) -> bool:
    if leading and next_token is not None and not token.whitespace_ and next_token.text in JOINERS:
        return False  # "two" in "two-factor" is part of the word, not a stopword or a count
    if token.pos_ in EDGE_STRIP_POS or token.is_stop or token.tag_ in POSSESSIVE_TAGS or token.is_space:
        return True
    # "three tables" -> "tables"
    return leading and token.like_num and next_token is not None and bool(token.whitespace_)


def _hyphen_tail(doc: Any, start: int, end: int) -> bool:
    """True if the last token ends a hyphenated word ("sign-on"), so it is no stopword to strip."""
    joiner = doc[end - 2] if end - 2 >= start else None
    return joiner is not None and joiner.text in JOINERS and not joiner.whitespace_


def has_inner_punct(doc: Any, start: int, end: int) -> bool:
    """True for phrases broken by punctuation ("high, 1.8 ms", "T (Treg) cell"); "two-factor" is fine."""
    return any(doc[i].is_punct and doc[i].text not in JOINERS and doc[i].text != "." for i in range(start, end))


def is_numeric(doc: Any, start: int, end: int) -> bool:
    """True if the tokens are only numbers and punctuation ("2023", "3.5 - 4")."""
    return all(doc[i].like_num or doc[i].is_punct or doc[i].is_digit for i in range(start, end))


def long_form_start(doc: Any, paren: int, acronym: str) -> int | None:
    """Token where the long form of "... (ACR)" begins (Schwartz & Hearst, 2003), or None."""
    letters = [c.lower() for c in acronym if c.isalnum()]
    window = min(len(letters) + 5, 2 * len(letters))
    first = paren
    sentence_start = doc[paren].sent.start
    while (
        first > sentence_start
        and paren - first < window
        and (not doc[first - 1].is_punct or doc[first - 1].text in JOINERS)
    ):
        first -= 1
    if first == paren:
        return None
    base = doc[first].idx
    text = doc[first:paren].text.lower()  # Span.text: Doc.text would rebuild the whole text
    s, pos = len(letters) - 1, len(text) - 1
    while s >= 0:
        # Match the letters right to left; the acronym's first letter must begin a word.
        while pos >= 0 and (text[pos] != letters[s] or (s == 0 and pos > 0 and text[pos - 1].isalnum())):
            pos -= 1
        if pos < 0:
            return None
        pos -= 1
        s -= 1
    char = base + pos + 1
    return next((t.i for t in doc[first:paren] if t.idx == char), None)


# -- arguments in the dependency parse --------------------------------------------------------


def subjects_of(verb: Any) -> tuple[list[Any], bool, int]:
    """The verb's subject tokens (with conjuncts), whether it is passive, and 1 if inherited."""
    passive = any(c.dep_ in ("nsubjpass", "auxpass") for c in verb.children)
    direct = [c for c in verb.children if c.dep_ in SUBJECT_DEPS]
    if direct:
        subject = direct[0]
        if subject.tag_ in ("WDT", "WP") and verb.dep_ == "relcl":
            return with_conjuncts(verb.head), passive, 1  # "the service that uses Redis"
        return with_conjuncts(subject), passive, 0
    if verb.dep_ == "acl":
        return [verb.head], passive, 1  # "a gateway using Redis"
    if verb.dep_ in ("conj", "xcomp") and verb.head is not verb:
        subjects, _, _ = subjects_of(verb.head)
        return subjects, passive, 1
    return [], passive, 0


def is_negated(verb: Any) -> bool:
    """True if the verb, or the verb it complements ("does not need to use"), is negated."""
    while True:
        if any(c.dep_ == "neg" for c in verb.children):
            return True
        if verb.dep_ != "xcomp" or verb.head is verb:
            return False
        verb = verb.head


def has_negative_determiner(token: Any) -> bool:
    """True for "no password" in "requires no password"."""
    return any(c.dep_ == "det" and c.lower_ in NEGATING_DETERMINERS for c in token.children)


def with_conjuncts(token: Any) -> list[Any]:
    """The token and the tokens coordinated with it ("Redis and Postgres")."""
    return [token, *token.conjuncts]


def prep_objects(prep: Any) -> list[Any]:
    """The objects of a preposition, with their conjuncts."""
    objects: list[Any] = []
    for child in prep.children:
        if child.dep_ in OBJECT_OF_PREP_DEPS:
            objects.extend(with_conjuncts(child))
    return objects
