"""Multi-hop planning and per-hop gathering (pipeline logic: retrieval is a function over fixed hits)."""

from __future__ import annotations

from kag.records import SearchHit, Source, verdict_summary
from pipelines.multihop import Hop, Plan, choice_options, chosen_option, gather, hop_sources, names_in, plan
from pipelines.verify import Verifier


def hit(chunk: str, title: str, text: str) -> SearchHit:
    return SearchHit(chunk, 1.0, f"d_{chunk}", "hp", title, title, text, 0, len(text), None, ())


def test_plans_for_hotpotqa_question_shapes() -> None:
    assert plan("Who was born earlier, Emma Bull or Virginia Woolf?").entities == ("Emma Bull", "Virginia Woolf")
    assert plan("Are Yingkou and Fuding the same level of city?").kind == "comparison"
    bridge = plan("What government position was held by the woman who portrayed Corliss Archer in Kiss and Tell?")
    assert bridge.kind == "bridge" and "Corliss Archer" in bridge.entities
    assert plan("Which days are anchor days?").kind == "single"


def test_names_in_text() -> None:
    names = names_in("Kiss and Tell is a 1945 film starring Shirley Temple as Corliss Archer.")
    assert "Shirley Temple" in names and "Corliss Archer" in names  # trailing punctuation stripped
    assert not any(n.lower() in ("is", "a", "as") for n in names)


def test_bridge_second_hop_retrieves_the_entity_the_first_hop_found() -> None:
    question = "What government position was held by the woman who portrayed Corliss Archer in Kiss and Tell?"
    first = [
        hit("k1", "Kiss and Tell (1945 film)", "Kiss and Tell is a 1945 film with Shirley Temple as Corliss Archer."),
        hit("x1", "Meet Corliss Archer", "Meet Corliss Archer is a radio sitcom."),
    ]
    temple = hit("t1", "Shirley Temple", "Shirley Temple Black was an actress and United States ambassador to Ghana.")
    asked: list[str] = []

    def retrieve(query: str, n: int):
        asked.append(query)
        hits = [temple] if "Shirley Temple" in query else [first[1]]
        return hits, [[h.chunk_id, 1.0] for h in hits]

    sources, hops = gather(question, plan(question), first, [["k1", 1.0]], retrieve, k=4)
    assert [s.chunk_id for s in sources][:2] == ["k1", "t1"]
    assert hops[1].found == "Shirley Temple" and hops[1].evidence == ["t1"]
    assert any(q.startswith("Shirley Temple") for q in asked)
    assert [h.to_dict()["sub_question"] for h in hops][0] == question


def test_comparison_retrieves_each_entity_and_puts_both_first() -> None:
    question = "Who was born earlier, Emma Bull or Virginia Woolf?"
    bull = hit("b", "Emma Bull", "Emma Bull (born 1954) is an American author.")
    woolf = hit("w", "Virginia Woolf", "Virginia Woolf (1882-1941) was an English writer.")
    other = hit("o", "Other", "Unrelated passage.")

    def retrieve(query: str, n: int):
        hits = [bull, other] if query.startswith("Emma Bull") else [other, woolf]
        return hits, []

    sources, hops = gather(question, plan(question), [other], [], retrieve, k=3)
    assert {s.chunk_id for s in sources[:2]} == {"b", "w"}
    assert [h.found for h in hops] == [None, "Emma Bull", "Virginia Woolf"]


# --- composition: every hop's evidence cited ------------------------------------------------------


def _bridge() -> tuple[str, list[Source], list[Hop], Plan]:
    question = "What government position was held by the woman who portrayed Corliss Archer in Kiss and Tell?"
    first = [
        hit(
            "k1", "Kiss and Tell (1945 film)", "Kiss and Tell is a 1945 film starring Shirley Temple as Corliss Archer."
        ),
        hit("x1", "Meet Corliss Archer", "Meet Corliss Archer is a radio sitcom."),
    ]
    temple = hit(
        "t1", "Shirley Temple", "Shirley Temple was an actress. She served as Chief of Protocol of the United States."
    )

    def retrieve(query: str, n: int):
        hits = [temple] if "Shirley Temple" in query else [first[1]]
        return hits, [[h.chunk_id, 1.0] for h in hits]

    the_plan = plan(question)
    merged, hops = gather(question, the_plan, first, [["k1", 1.0]], retrieve, k=4)
    return question, [Source(i, h) for i, h in enumerate(merged, start=1)], hops, the_plan


def test_hop_sources_are_the_passage_naming_the_bridge_and_the_bridge_entitys_own() -> None:
    question, sources, hops, the_plan = _bridge()
    (e1, first), (e2, second) = hop_sources(the_plan, hops, sources)
    assert [s.hit.chunk_id for s in first] == ["k1"]  # names Shirley Temple; the sitcom passage does not
    assert [s.hit.chunk_id for s in second] == ["t1"]
    assert e1 == e2 == "Shirley Temple"
    assert hop_sources(Plan("single"), hops[:1], sources) == []
    assert hop_sources(the_plan, hops[:1], sources) == []  # no second hop was found: nothing to compose


def test_an_answer_citing_one_hop_gets_the_other_hops_evidence_quoted(embedder) -> None:
    question, sources, hops, the_plan = _bridge()
    verifier = Verifier(embedder, policy="extractive")
    t1 = next(s.number for s in sources if s.hit.chunk_id == "t1")
    verified = verifier.verify(
        question, f"Shirley Temple served as Chief of Protocol of the United States [{t1}].", sources
    )
    assert [c.chunk_id for c in verified.citations] == ["t1"]
    composed = verifier.with_hop_evidence(question, verified, hop_sources(the_plan, hops, sources))
    added = [s for s in composed.sentences if s.action == "added"]
    assert len(added) == 1 and added[0].supported and added[0].original == ""
    (citation,) = added[0].citations
    assert citation.chunk_id == "k1" and citation.quote == sources[0].hit.text  # the whole (one-sentence) passage
    assert composed.answer.startswith(verified.answer) and composed.answer.endswith(f'" [{citation.source_number}]')
    assert {c.chunk_id for c in composed.citations} == {"k1", "t1"}
    summary = verdict_summary(composed.sentences)  # the added quote is not counted as a model sentence
    assert summary.split(" model sentences")[0].endswith("/1") and summary.endswith(", 1 hop quote added")
    assert added[0].label == "added (evidence of a hop, quoted)" and not added[0].model_supported
    # an answer that already cites both hops, or an abstention, is left as it is
    assert verifier.with_hop_evidence(question, composed, hop_sources(the_plan, hops, sources)) == composed
    abstained = verifier.abstention("judged unanswerable: test")
    assert verifier.with_hop_evidence(question, abstained, hop_sources(the_plan, hops, sources)) == abstained


def test_a_hop_with_nothing_relevant_adds_nothing(embedder) -> None:
    question, sources, hops, the_plan = _bridge()
    verifier = Verifier(embedder, policy="extractive")
    t1 = next(s.number for s in sources if s.hit.chunk_id == "t1")
    verified = verifier.verify(
        question, f"Shirley Temple served as Chief of Protocol of the United States [{t1}].", sources
    )
    unrelated = [Source(9, hit("z9", "Weather", "Rain is expected over the weekend in the northern valleys."))]
    assert verifier.with_hop_evidence(question, verified, [(None, unrelated)]) == verified
    # a hop's sentence must name its entity: a hop about someone else's passage adds nothing
    assert verifier.with_hop_evidence(question, verified, [("Rain", [sources[1]])]) == verified


# --- the short answer of a choice question ---------------------------------------------------------


def test_choice_options_are_the_two_names_joined_by_or() -> None:
    assert choice_options("who is younger Keith Bostic or Jerry Glanville ?") == ("Keith Bostic", "Jerry Glanville")
    assert choice_options("Who was born earlier, Emma Bull or Virginia Woolf?") == ("Emma Bull", "Virginia Woolf")
    # "and" joins things the question asks about together, not options; no names, no options
    assert choice_options("Are both Cypress and Ajuga genera?") is None
    assert choice_options("Is the store open on Sundays or holidays?") is None
    assert choice_options("What is the capital of France?") is None


def test_the_chosen_option_is_the_one_the_answer_names_first() -> None:
    options = ("Emma Bull", "Virginia Woolf")
    assert chosen_option(options, "Virginia Woolf was born in 1882, before Emma Bull.") == "Virginia Woolf"
    assert chosen_option(options, "Emma Bull is younger than Virginia Woolf.") == "Emma Bull"
    assert chosen_option(options, "Woolf was born earlier (1882).") == "Virginia Woolf"  # by the last word
    assert chosen_option(options, "Neither is named here.") is None
    # a last word both options share tells nothing
    assert chosen_option(("John Smith", "Anna Smith"), "Smith was first.") is None
    assert chosen_option(("Bull", "Woolf"), "The Bulldogs won.") is None  # whole words only


class _NoModel:
    """A generator that must not be asked: the choice is read off the verified answer."""

    def render_chat(self, messages: object) -> str:
        raise AssertionError("the model was asked for a short answer it did not need to pick")

    def complete(self, prompt: str, *, sampling: object = None) -> object:
        raise AssertionError("the model was asked for a short answer it did not need to pick")


def test_a_choice_questions_short_answer_is_the_option_without_a_model_call() -> None:
    from kag.records import SentenceVerdict, Verification
    from pipelines.answer import AnswerPipeline

    pipeline = AnswerPipeline.__new__(AnswerPipeline)
    pipeline.generator = _NoModel()  # type: ignore[assignment]
    said = "Keith Bostic is younger than Jerry Glanville [1]."
    verified = Verification(said, (SentenceVerdict(said, said, True, 0.9, "kept"),), False, "extractive")
    question = "who is younger Keith Bostic or Jerry Glanville ?"
    assert pipeline._short_answer(question, verified) == "Keith Bostic"
    abstained = Verification("The sources do not answer this.", (), True, "extractive", "low evidence")
    assert pipeline._short_answer(question, abstained) is None


def test_a_comparison_answer_gets_the_other_entitys_fact_quoted(embedder) -> None:
    question = "Who is younger, Keith Bostic or Jerry Glanville?"
    bostic = hit("b1", "Keith Bostic", "Keith Bostic (born January 17, 1961) is a former American football player.")
    glanville = hit("g1", "Jerry Glanville", "Jerry Glanville (born October 14, 1941) is a former NFL head coach.")
    sources = [Source(1, bostic), Source(2, glanville)]
    verifier = Verifier(embedder, policy="extractive")
    verified = verifier.verify(question, "Keith Bostic was born on January 17, 1961 [1].", sources)
    assert {c.chunk_id for c in verified.citations} == {"b1"}
    hops = [("Keith Bostic", [sources[0]]), ("Jerry Glanville", [sources[1]])]
    composed = verifier.with_hop_evidence(question, verified, hops, sources)
    (added,) = [s for s in composed.sentences if s.action == "added"]
    assert added.citations[0].chunk_id == "g1" and "October 14, 1941" in added.text
    assert {c.chunk_id for c in composed.citations} == {"b1", "g1"}


def test_the_premise_an_answer_leaves_unsaid_is_quoted_from_another_document(embedder) -> None:
    question, sources, _, _ = _bridge()
    verifier = Verifier(embedder, policy="extractive")
    t1 = next(s.number for s in sources if s.hit.chunk_id == "t1")
    verified = verifier.verify(
        question, f"Shirley Temple served as Chief of Protocol of the United States [{t1}].", sources
    )
    # no hop was planned (one retrieval found both passages): the premise still gets its quote
    composed = verifier.with_hop_evidence(question, verified, [], sources)
    (added,) = [s for s in composed.sentences if s.action == "added"]
    assert added.citations[0].chunk_id == "k1" and "Corliss Archer" in added.text


def test_an_answer_whose_quote_says_the_question_gets_nothing_added(embedder) -> None:
    doc = hit("p1", "PTO policy", "Full-time employees accrue 1.5 days of paid time off per month.")
    other = hit("o1", "Holidays", "Employees get ten paid holidays per year, listed by the office manager.")
    sources = [Source(1, doc), Source(2, other)]
    verifier = Verifier(embedder, policy="extractive")
    question = "How many days of paid time off do full-time employees accrue per month?"
    verified = verifier.verify(question, "Full-time employees accrue 1.5 days of paid time off per month [1].", sources)
    assert not verified.abstained
    assert verifier.with_hop_evidence(question, verified, [], sources) == verified
