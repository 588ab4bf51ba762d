"""Multi-hop planning and per-hop gathering (pipeline logic: retrieval is a function over fixed hits)."""

from __future__ import annotations

from kag.records import SearchHit
from pipelines.multihop import gather, names_in, plan


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
