"""Follow-up questions in a conversation, rewritten into standalone questions before retrieval.

"Which PostgreSQL version does it run?" after "What is Heron?" retrieves nothing about Heron: the
subject is in the conversation, not the question. The loaded model rewrites the follow-up from the
last turns; the rewrite is kept only if it still asks what the user asked (it keeps most of the
follow-up's content words), else the names of the previous question are added to the follow-up. The
audit record keeps the turns used, the follow-up as asked, the rewrite and how it was made.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipelines.verify import content_tokens

REWRITE_INSTRUCTION = (
    "Rewrite the user's last question so that it can be understood without the conversation: replace words like "
    "it, they, this, that, he, she with what they refer to. Keep everything else. Reply with the question only."
)
MAX_TURNS = 6  # the last turns that the rewrite sees
_REFERRING = re.compile(r"\b(?:it|its|they|them|their|this|that|these|those|he|him|his|she|her|there|one)\b", re.I)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w-]*(?:\s+[A-Z][\w-]*)*")


class RewriteModel(Protocol):
    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def complete(self, prompt: str, *, sampling: Any = None) -> Any: ...

    @property
    def sampling(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Rewrite:
    asked: str
    question: str  # what is retrieved and answered
    method: str  # "unchanged", "model" or "names" (the model's rewrite failed its check)
    turns: tuple[tuple[str, str], ...]
    model_output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "question": self.question,
            "method": self.method,
            "turns": [list(t) for t in self.turns],
            "model_output": self.model_output,
        }


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(m.group() for m in _NAME.finditer(text)))


def rewrite_follow_up(model: RewriteModel, history: Sequence[tuple[str, str]], question: str) -> Rewrite:
    """A standalone form of `question` given the earlier turns `history` ((role, text), oldest first)."""
    turns = tuple((role, " ".join(text.split())[:1000]) for role, text in history[-MAX_TURNS:] if text.strip())
    if not turns or not _REFERRING.search(question):
        return Rewrite(question, question, "unchanged", turns)
    transcript = "\n".join(f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in turns)
    prompt = model.render_chat(
        [
            {"role": "system", "content": REWRITE_INSTRUCTION},
            {"role": "user", "content": f"Conversation:\n{transcript}\n\nLast question: {question}"},
        ]
    )
    sampling = model.sampling.replace(max_tokens=64, stop=("\n",), temperature=0.0)
    output = str(model.complete(prompt, sampling=sampling).text).strip()
    candidate = output.removeprefix("Rewritten question:").strip().strip('"')
    asked = set(content_tokens(question))
    kept = set(content_tokens(candidate))
    said = set(content_tokens(transcript))
    # still a question, keeping most of the follow-up, adding only words the conversation holds (a
    # rewrite that answers or invents - "The answer is 2022." - is not the user's question)
    keeps_the_question = (
        candidate.endswith("?")
        and len(asked & kept) >= 0.5 * len(asked)
        and bool(kept - asked)
        and kept - asked <= said
    )
    if candidate and len(candidate) <= 3 * len(question) + 200 and keeps_the_question:
        return Rewrite(question, candidate, "model", turns, output)
    previous = next((text for role, text in reversed(turns) if role == "user"), "")
    names = [n for n in _names(previous) if n.lower() not in question.lower()]
    if not names:
        return Rewrite(question, question, "unchanged", turns, output)
    return Rewrite(question, f"{question} ({', '.join(names)})", "names", turns, output)
