"""A slow scripted generator (the answer pipeline's `Generator` protocol) and a `kag serve` process that
uses it, for tests of shutdown and overload that need answers of a known, slow pace on a real server."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.generate import Completion
from tests.kag.api.live import LiveServer

#: what the scripted model says about the Kestrel document of the tests (grounded, with a citation)
KESTREL_ANSWER = "Kestrel releases are deployed every Tuesday by the platform team [1]."
KESTREL_DOC = """Kestrel deployment guide

Kestrel releases are deployed every Tuesday by the platform team. Rollbacks use the blue-green switch.
"""
KESTREL_QUESTION = "When are Kestrel releases deployed?"


class ScriptedGenerator:
    """Says `script` word by word, `seconds_per_token` apart, whatever the prompt; tokens are words."""

    def __init__(self, script: str, seconds_per_token: float, *, n_ctx: int = 4096) -> None:
        self.script = script
        self.seconds_per_token = seconds_per_token
        self._n_ctx = n_ctx
        self.streams_closed = 0

    @property
    def model_path(self) -> str:
        return "/models/scripted.gguf"

    @property
    def model_sha256(self) -> str:
        return hashlib.sha256(self.script.encode()).hexdigest()

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def model_info(self) -> dict[str, Any]:
        return {"path": self.model_path, "sha256": self.model_sha256, "name": "scripted"}

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_budget(self, max_tokens: int | None = None) -> int:
        return self._n_ctx - (max_tokens or 64) - 16

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        return "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages) + "<assistant>\n"

    def yes_probability(self, prompt: str) -> float:
        return 0.9  # the answerability probe: the sources always look like they answer

    def complete(self, prompt: str, *, sampling: Any = None) -> Completion:
        # the short-answer pick: the first two words of the verified text, a piece of it by construction
        text = prompt.partition("Text: ")[2].partition("\nQuestion:")[0]
        phrase = " ".join(text.split()[:2]).strip(".")
        return Completion(
            phrase, prompt_tokens=len(prompt.split()), completion_tokens=2, seconds=0.0, finish_reason="stop"
        )

    def stream(self, prompt: str, *, sampling: Any = None, continue_probe: bool = False) -> Iterator[str]:
        words = self.script.split(" ")
        try:
            for i, word in enumerate(words):
                time.sleep(self.seconds_per_token)
                yield word if i == 0 else " " + word
        finally:
            self.streams_closed += 1


class ScriptedServer(LiveServer):
    """`kag serve`'s own server loop (`run_server`) over a runtime whose LLM is a ScriptedGenerator."""

    def __init__(
        self, data_dir: Path, *, script: str, seconds_per_token: float, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            data_dir,
            env={
                "KAG_GRAPH_ENABLED": "false",  # no spaCy model to load: these tests are about the service
                "SCRIPTED_ANSWER": script,
                "SCRIPTED_SECONDS_PER_TOKEN": str(seconds_per_token),
                **(env or {}),
            },
        )
        root = str(Path(__file__).resolve().parents[3])  # `tests` imports from the checkout's root
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, self.env.get("PYTHONPATH")) if p)
        self.command = [sys.executable, "-m", "tests.kag.api.scripted"]


def main() -> None:
    """Serve the API as `kag serve` does, with the scripted generator in place of llama.cpp."""
    from kag.api import create_app
    from kag.cli.runtime import Runtime
    from kag.cli.serve import resolve_port, run_server
    from kag.settings import Settings

    settings = Settings()
    runtime = Runtime(settings)
    runtime.__dict__["generator"] = ScriptedGenerator(
        os.environ["SCRIPTED_ANSWER"], float(os.environ["SCRIPTED_SECONDS_PER_TOKEN"])
    )
    try:
        port = resolve_port(settings, None, dict(os.environ))
        started = run_server(create_app(settings, runtime), settings, host="127.0.0.1", port=port, log_level="info")
    finally:
        runtime.close()
    sys.exit(0 if started else 1)


if __name__ == "__main__":
    main()
