"""Follow-up rewriting: the model's rewrite is used only when it still asks the user's question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.conversation import rewrite_follow_up
from pipelines.generate import SamplingParams


@dataclass
class Reply:
    text: str


class ScriptedModel:
    """The RewriteModel protocol with a fixed reply; records the prompts it was given."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []
        self.sampling = SamplingParams()

    def render_chat(self, messages: Any) -> str:
        return "\n".join(m["content"] for m in messages)

    def complete(self, prompt: str, *, sampling: Any = None) -> Reply:
        self.prompts.append(prompt)
        assert sampling.max_tokens <= 64 and sampling.stop == ("\n",)
        return Reply(self.reply)


HISTORY = [("user", "What is Heron?"), ("assistant", "Heron is the billing service [1].")]


def test_a_follow_up_is_rewritten_by_the_model() -> None:
    model = ScriptedModel("Which PostgreSQL version does Heron run?")
    rewrite = rewrite_follow_up(model, HISTORY, "Which PostgreSQL version does it run?")
    assert rewrite.question == "Which PostgreSQL version does Heron run?" and rewrite.method == "model"
    assert "What is Heron?" in model.prompts[0] and rewrite.to_dict()["turns"][0] == ["user", "What is Heron?"]


def test_a_rewrite_that_drops_the_question_falls_back_to_the_previous_names() -> None:
    model = ScriptedModel("Heron is the billing service.")  # answers instead of rewriting
    rewrite = rewrite_follow_up(model, HISTORY, "Which PostgreSQL version does it run?")
    assert rewrite.method == "names" and rewrite.question == "Which PostgreSQL version does it run? (Heron)"


def test_a_standalone_question_is_not_sent_to_the_model() -> None:
    model = ScriptedModel("unused")
    rewrite = rewrite_follow_up(model, HISTORY, "How many PTO days do employees accrue per month?")
    assert rewrite.method == "unchanged" and not model.prompts
    assert rewrite_follow_up(model, [], "What does it cost?").method == "unchanged"


def test_a_rewrite_that_answers_or_invents_is_not_used() -> None:
    # SmolLM2-135M's rewrite of the follow-up on the demo corpus: an answer with an invented year
    model = ScriptedModel("The user asked about the PostgreSQL version. The answer is 2022.")
    rewrite = rewrite_follow_up(model, HISTORY, "Which PostgreSQL version does it run?")
    assert rewrite.method == "names" and rewrite.question == "Which PostgreSQL version does it run? (Heron)"
    assert rewrite.model_output == "The user asked about the PostgreSQL version. The answer is 2022."
