"""Local LLM generation through llama-cpp-python: one shared model, exact prompts, reproducible sampling."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kag.errors import ConfigurationError, GenerationError, MissingDependencyError, ModelLoadError
from kag.models.catalog import bundled_llm_model_path
from kag.records import ChunkDraft, EntityRecord, GraphExtraction, MentionRecord, RelationRecord, SearchHit, Source
from kag.stores.graph import RELATION_TYPES

# Used only when a GGUF carries no `tokenizer.chat_template`; SmolLM2 and many small models are ChatML.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NO_ANSWER = "The sources do not answer this."
# The answer prompt asks for a fixed reply shape: "Answerable: yes|no" first, then "Answer: ...". kag
# appends "Answerable:" to the rendered prompt and reads the model's probability of "yes" there
# (`LlamaGenerator.yes_probability`): one prompt evaluation decides answerability and, when the answer
# is generated, the same evaluated prefix is continued (" yes\nAnswer:"), so the probe costs no second
# pass over the sources. There is no demonstration turn: a fixed one-shot example was parroted into real
# answers ("each employee gets one parking permit"), and the verifier adds the [n] markers itself.
ANSWER_INSTRUCTION = (
    "You answer questions using only the numbered sources. Reply in exactly this form:\n"
    "Answerable: yes or no (do the sources contain the answer?)\n"
    "Answer: one or two short plain sentences taken from the sources, each followed by the number of its "
    "source, like [2]. Start with Yes or No when the question asks yes or no. No headings, lists or markdown.\n"
    f'If the sources do not contain the answer, reply "Answerable: no" and "Answer: {NO_ANSWER}"'
)
ANSWER_EXAMPLE: tuple[str, str] | None = None

# SmolLM2-135M cannot keep the reply form above (it writes "The answer is:" and loops), and without a
# demonstration turn it writes no [n] at all. It keeps the earlier "According to [n]" instruction and a
# demonstration that is harmless: about an invented example source, so a model that parrots it writes
# something no real source supports, and the verifier drops it.
DEMONSTRATED_INSTRUCTION = (
    'Answer using only the sources. Name the source of each sentence, like "According to [2], ...". '
    f'If the sources do not answer the question, say "{NO_ANSWER}"'
)
HARMLESS_EXAMPLE = (
    "Sources:\n[1] (Example A) The example widget is blue.\n\n[2] (Example B) The example gadget weighs "
    "two units.\n\nQuestion: What colour is the example widget?",
    "According to [1], the example widget is blue.",
)


@dataclass(frozen=True, slots=True)
class PromptProfile:
    """How a model is asked for an answer: instruction, demonstration turn, and whether it is probed
    for answerability first (it must then follow the "Answerable: ... Answer: ..." reply form)."""

    name: str
    instruction: str
    example: tuple[str, str] | None
    probe: bool


PROBED = PromptProfile("probed", ANSWER_INSTRUCTION, None, True)
DEMONSTRATED = PromptProfile("demonstrated", DEMONSTRATED_INSTRUCTION, HARMLESS_EXAMPLE, False)
# by the sha256 of the GGUF weights; every other model gets PROBED
PROMPT_PROFILES = {
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53": DEMONSTRATED,  # SmolLM2-135M Q4_1
}


def prompt_profile(model_sha256: str) -> PromptProfile:
    return PROMPT_PROFILES.get(model_sha256, PROBED)


PROBE_PREFIX = "Answerable:"
PROBE_YES = " yes\nAnswer:"
# The answerability threshold tuned per model on a seeded SQuAD 2.0 sample (docs/evaluation.md), by the
# sha256 of the GGUF weights; other files get 0 (the probe is recorded, it decides nothing).
TUNED_MIN_ANSWERABLE = {
    # qwen2.5-coder-0.5b Q4_K_M: its P(yes) sits at 0.65-0.85 for answerable and unanswerable SQuAD 2.0
    # questions alike, so the best threshold on the tuning sample (Youden's J) is 0: recorded, not deciding
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32": 0.0,
}


def tuned_min_answerable(model_sha256: str) -> float:
    return TUNED_MIN_ANSWERABLE.get(model_sha256, 0.0)


SHORT_ANSWER_INSTRUCTION = (
    "Copy from the text only the few words that answer the question: a name, number, date, place or short "
    "phrase. Reply with those words only."
)


def short_answer_sampling(base: SamplingParams) -> SamplingParams:
    """Greedy, a few tokens, one line: the short-answer pick from an already verified answer."""
    return base.replace(max_tokens=24, stop=("\n",), temperature=0.0)


# generation ends at a blank line or where the model starts a new turn of its own
ANSWER_STOP = ("\n\n", "\nQuestion:", "\nSources:", "\nAnswerable:")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")
_SPACES = re.compile(r"\s+")
_PATH_HINT = (
    "set KAG_LLM_MODEL (formerly KAG_LLM_MODEL_PATH) to a model of `kag models list` or a local GGUF file "
    "that this llama-cpp-python can load"
)
_MAX_SEED = 0xFFFFFFFE  # 0xFFFFFFFF is llama.cpp's "random seed", which would defeat replay


@functools.lru_cache(maxsize=32)
def _schema_to_gbnf(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(schema_json))


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Everything that decides which tokens are sampled; recorded in the audit log for replay."""

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    seed: int = 42
    max_tokens: int = 256
    # llama-cpp-python's own defaults, pinned here so the audit record describes sampling completely
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(str(x) for x in self.stop))  # a list from a JSON audit record
        checks = {
            "temperature must be >= 0": self.temperature >= 0,
            "top_k must be >= 0": self.top_k >= 0,
            "top_p must be in (0, 1]": 0 < self.top_p <= 1,
            "min_p must be in [0, 1]": 0 <= self.min_p <= 1,
            f"seed must be in [0, {_MAX_SEED}]": 0 <= self.seed <= _MAX_SEED,
            "max_tokens must be >= 1": self.max_tokens >= 1,
        }
        if problems := [text for text, ok in checks.items() if not ok]:
            raise ConfigurationError("invalid sampling parameters: " + "; ".join(problems), stage="generate")

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stop"] = list(self.stop)
        return out


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished generation: the text and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str  # "stop" (end of turn) or "length" (max_tokens reached)


def default_threads() -> int:
    """llama.cpp threads when KAG_LLM_THREADS is unset: every core but one, and at least one."""
    # llama.cpp's threads meet at a barrier after every matrix product, so one thread that waits
    # for a core stalls the others: on a busy 2-core host 2 threads measured several times slower
    # than 1 (docs/models.md), while on an idle host cores-1 costs little against all cores.
    # The affinity mask respects container CPU limits, unlike os.cpu_count().
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


class LlamaGenerator:
    """A GGUF model served by llama.cpp through its raw completion API on fully rendered prompts.

    One loaded model is shared by every caller. A llama.cpp context is not thread-safe, so each
    completion holds `self._lock` from prompt evaluation to the last token, and a stream holds it
    until the iterator is exhausted or closed: always exhaust or `close()` a stream.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        sampling: SamplingParams | None = None,
    ) -> None:
        if n_ctx < 64:
            raise ConfigurationError(f"n_ctx must be >= 64, got {n_ctx}", stage="generate")
        if n_threads is not None and n_threads < 1:
            raise ConfigurationError(f"n_threads must be >= 1, got {n_threads}", stage="generate")
        self._model_path = model_path or bundled_llm_model_path()
        self._n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.n_gpu_layers = n_gpu_layers
        self.sampling = sampling or SamplingParams()
        self._llm: Any = None
        self._formatter: Any = None
        self._sha256: str | None = None
        # a threading.Lock, not an RLock: a streaming response may resume its generator on another thread
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    @property
    def model_path(self) -> str:
        return self._model_path

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def model_sha256(self) -> str:
        """sha256 of the GGUF file, hashed once: the audit log records which weights answered."""
        if self._sha256 is None:
            try:
                with open(self._model_path, "rb") as handle:
                    self._sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
            except OSError as exc:
                raise ModelLoadError(
                    f"cannot read the LLM file {self._model_path}: {exc}", hint=_PATH_HINT, stage="generate"
                ) from exc
        return self._sha256

    def model_info(self) -> dict[str, Any]:
        """What the audit log records about the model: enough to find the same weights and replay."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            runtime = version("llama_cpp_python")
        except PackageNotFoundError:
            runtime = "unknown"
        return {
            "path": self._model_path,
            "sha256": self.model_sha256,
            "n_ctx": self._n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            # float sums split differently across threads, which can flip a greedy choice: replay needs it
            "n_threads": self.n_threads,
            "runtime": f"llama-cpp-python {runtime}",
        }

    # -- lifecycle --------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Load the model (idempotent)."""
        if self._llm is not None:
            return
        with self._lock:
            if self._llm is not None:
                return
            try:
                import llama_cpp
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            except ImportError as exc:
                raise MissingDependencyError(
                    "llama-cpp-python is not installed", hint="pip install llama-cpp-python", stage="generate"
                ) from exc
            if not Path(self._model_path).is_file():
                raise ModelLoadError(
                    f"the LLM file {self._model_path} does not exist", hint=_PATH_HINT, stage="generate"
                )
            try:
                llm = llama_cpp.Llama(
                    model_path=self._model_path,
                    n_ctx=self._n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_gpu_layers=self.n_gpu_layers,
                    verbose=False,
                )
            except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError/OSError
                raise ModelLoadError(
                    f"cannot load the LLM from {self._model_path}: {exc}", hint=_PATH_HINT, stage="generate"
                ) from exc
            template = llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llm._model.token_get_text(llm.token_eos()),
                bos_token=llm._model.token_get_text(llm.token_bos()),
                add_generation_prompt=True,
            )
            self._llm = llm

    def close(self) -> None:
        """Free the model; waits for a running generation (call it once no caller counts tokens)."""
        with self._lock:
            llm, self._llm, self._formatter = self._llm, None, None
            self._grammars.clear()
        if llm is not None:
            llm.close()

    def _model(self) -> Any:
        self.warm_up()
        return self._llm

    # -- prompts ----------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the prompt tokenizer sees it (special tokens included)."""
        # Tokenizing reads only the vocabulary, never the context, so it needs no lock and can
        # run while another thread generates.
        return len(self._model().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The exact prompt string for chat messages, rendered with the model's chat template."""
        self.warm_up()
        clean = []
        for message in messages:
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise ConfigurationError("each chat message needs a string 'role' and 'content'", stage="generate")
            clean.append({"role": role, "content": content})
        try:
            return str(self._formatter(messages=clean).prompt)
        except Exception as exc:  # jinja2 errors and the template's raise_exception
            raise GenerationError(f"the chat template rejected the messages: {exc}", stage="generate") from exc

    def prompt_budget(self, max_tokens: int | None = None) -> int:
        """Tokens left for message texts after the answer's max_tokens and the template's frame of four turns."""
        frame = self.render_chat([{"role": r, "content": ""} for r in ("system", "user", "assistant", "user")])
        # a few tokens of slack: BPE may merge across a message's edges differently than alone
        reserve = (max_tokens or self.sampling.max_tokens) + self.count_tokens(frame) + 8
        return max(0, self._n_ctx - reserve)

    # -- generation -------------------------------------------------------------------------

    def complete(
        self,
        prompt: str,
        *,
        sampling: SamplingParams | None = None,
        grammar: str | None = None,
        continue_probe: bool = False,
    ) -> Completion:
        """Generate a continuation of the rendered `prompt`; same prompt + sampling gives the same text
        (`continue_probe` as in `stream`)."""
        params = sampling or self.sampling
        self.warm_up()
        compiled = self._grammar(grammar) if grammar else None
        with self._lock:
            started = time.perf_counter()
            result = self._run(self._require_loaded(), prompt, params, compiled, stream=False, keep=continue_probe)
            seconds = time.perf_counter() - started
        choice, usage = result["choices"][0], result["usage"]
        return Completion(
            text=choice["text"],
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            seconds=seconds,
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )

    def stream(
        self,
        prompt: str,
        *,
        sampling: SamplingParams | None = None,
        grammar: str | None = None,
        continue_probe: bool = False,
    ) -> Iterator[str]:
        """Text pieces of the same continuation `complete` returns, as they are generated.

        `continue_probe`: `prompt` extends the prompt of the last `yes_probability` call, whose
        evaluated tokens are kept, so only the new tail is evaluated. The result is the same on every
        replay of the same probe-then-continue sequence."""
        params = sampling or self.sampling
        self.warm_up()
        compiled = self._grammar(grammar) if grammar else None  # fail before the caller starts iterating
        return self._stream(prompt, params, compiled, continue_probe)

    def _stream(self, prompt: str, params: SamplingParams, compiled: Any, keep: bool = False) -> Iterator[str]:
        with self._lock:
            chunks = self._run(self._require_loaded(), prompt, params, compiled, stream=True, keep=keep)
            try:
                for chunk in chunks:
                    if piece := chunk["choices"][0]["text"]:
                        yield piece
            except ValueError as exc:  # a streaming completion checks the prompt length lazily
                raise _too_long(exc) from exc

    def yes_probability(self, prompt: str) -> float:
        """P("yes") / (P("yes") + P("no")) for the token after the rendered `prompt` (pointwise relevance)."""
        import numpy as np

        llm = self._model()
        yes_ids, no_ids = self._answer_token_ids()
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(tokens) >= self._n_ctx:
            tokens = tokens[-(self._n_ctx - 1) :]  # keep the question and "Answer:" at the end
        with self._lock:
            model = self._require_loaded()
            model.reset()
            model.eval(tokens)
            logits = np.ctypeslib.as_array(model._ctx.get_logits_ith(-1), shape=(model.n_vocab(),)).astype(np.float64)
        top = logits.max()
        yes = float(np.exp(logits[yes_ids] - top).sum())
        no = float(np.exp(logits[no_ids] - top).sum())
        return yes / (yes + no) if yes + no > 0 else 0.5

    def _answer_token_ids(self) -> tuple[list[int], list[int]]:
        """First-token ids of "yes"/"no" as the model may write them (case, leading space)."""
        llm = self._model()

        def ids(words: Sequence[str]) -> list[int]:
            found = {llm.tokenize(w.encode("utf-8"), add_bos=False, special=False)[0] for w in words}
            return sorted(found)

        yes, no = ids(["yes", " yes", "Yes", " Yes"]), ids(["no", " no", "No", " No"])
        return [t for t in yes if t not in no], [t for t in no if t not in yes]

    def complete_json(self, prompt: str, schema: Mapping[str, Any], *, sampling: SamplingParams | None = None) -> Any:
        """Generate JSON constrained by a JSON-schema grammar (GBNF) and return it parsed."""
        try:
            grammar = _schema_to_gbnf(json.dumps(schema))  # key order is the order the model writes
        except Exception as exc:  # the converter raises plain Exceptions
            raise GenerationError(f"cannot turn the JSON schema into a grammar: {exc}", stage="generate") from exc
        completion = self.complete(prompt, sampling=sampling, grammar=grammar)
        try:
            return json.loads(completion.text)
        except json.JSONDecodeError as exc:
            hint = "raise max_tokens" if completion.finish_reason == "length" else None
            raise GenerationError(f"the model's output is not valid JSON: {exc}", hint=hint, stage="generate") from exc

    def _require_loaded(self) -> Any:
        if self._llm is None:  # close() ran between warm_up and taking the lock
            raise GenerationError("the LLM was closed", hint="call warm_up() again", stage="generate")
        return self._llm

    def _grammar(self, gbnf: str) -> Any:
        import llama_cpp

        cached = self._grammars.get(gbnf)
        if cached is not None:
            return cached
        llm = self._model()
        # llama.cpp returns NULL for a grammar it cannot parse and then crashes the process when
        # the sampler chain uses it, so parse it once here and fail politely instead.
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise GenerationError("llama.cpp cannot parse the GBNF grammar", hint="check its syntax", stage="generate")
        llama_cpp.llama_sampler_free(sampler)
        if len(self._grammars) >= 64:  # callers passing ever-new grammars must not grow this forever
            self._grammars.clear()
        grammar = self._grammars[gbnf] = llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
        return grammar

    def _run(
        self, llm: Any, prompt: str, params: SamplingParams, grammar: Any, *, stream: bool, keep: bool = False
    ) -> Any:
        # Evaluate the whole prompt every time: reusing a cached prefix evaluates the tail in a
        # different batch shape, whose float rounding can flip a greedy choice, and replay must be exact.
        # The one exception is `keep` (continuing a probe), which every replay repeats the same way.
        if not keep:
            llm.reset()
        try:
            return llm.create_completion(
                prompt,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                repeat_penalty=params.repeat_penalty,
                seed=params.seed,
                grammar=grammar,
                stream=stream,
                stop=list(params.stop) or None,
            )
        except ValueError as exc:  # the prompt does not fit the context window
            raise _too_long(exc) from exc


def _too_long(exc: ValueError) -> GenerationError:
    return GenerationError(str(exc), hint="shorten the prompt or raise KAG_LLM_N_CTX", stage="generate")


# -- repetition ------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


class RepetitionGuard:
    """Watches a streamed answer and says when it starts repeating itself.

    Small models fall into loops ("a company called Gold. a company called Gold. ...") that run to
    max_tokens; a loop adds nothing the first pass did not say. The guard fires when the last `window`
    words already occurred, in the same order, earlier in the text; `text` is then the answer up to
    where the repeat began."""

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self._text = ""
        self.cut: int | None = None

    def feed(self, piece: str) -> bool:
        """Add a streamed piece; True once the text repeats (stop generating)."""
        if self.cut is not None:
            return True
        self._text += piece
        words = [(m.group().lower(), m.start()) for m in _WORD.finditer(self._text)]
        n = self.window
        if len(words) < 2 * n:
            return False
        tokens = [w for w, _ in words]
        tail = tokens[-n:]
        for i in range(len(tokens) - 2 * n + 1):
            if tokens[i : i + n] == tail:
                # the loop's period; the repeat began at the first word from which every word equals
                # the one a period before
                period = len(tokens) - n - i
                j = len(tokens) - n
                while j - 1 - period >= 0 and tokens[j - 1] == tokens[j - 1 - period]:
                    j -= 1
                self.cut = words[j][1]
                return True
        return False

    @property
    def text(self) -> str:
        return self._text if self.cut is None else self._text[: self.cut].rstrip()


# -- answer prompts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerPrompt:
    """The chat messages of a grounded answer and the numbered sources they contain."""

    system: str
    example: tuple[str, str] | None  # a demonstration (user, assistant) turn pair, or None
    user: str
    sources: tuple[Source, ...]
    tokens: int  # tokens of all message texts, never above the budget it was built for

    @property
    def messages(self) -> list[dict[str, str]]:
        turns = [{"role": "system", "content": self.system}]
        if self.example is not None:
            turns += [{"role": "user", "content": self.example[0]}, {"role": "assistant", "content": self.example[1]}]
        return [*turns, {"role": "user", "content": self.user}]


def _user_message(question: str, lines: Sequence[str]) -> str:
    body = "\n\n".join(lines) if lines else "(no sources)"
    return f"Sources:\n{body}\n\nQuestion: {question}"


def _source_line(number: int, hit: SearchHit, text: str) -> str:
    where = hit.title or Path(hit.source_uri).name or hit.document_id
    if hit.page is not None:
        where += f", p. {hit.page}"
    return f"[{number}] ({where}) {_SPACES.sub(' ', text).strip()}"


def _sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence of `text` (the last one is len(text))."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    stripped = len(text.rstrip())
    return [*(e for e in ends if e < stripped), stripped] if stripped else []


def build_answer_prompt(
    question: str,
    hits: Sequence[SearchHit],
    *,
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    instruction: str = ANSWER_INSTRUCTION,
    example: tuple[str, str] | None = ANSWER_EXAMPLE,
) -> AnswerPrompt:
    """Numbered sources in rank order, as many as fit `budget_tokens` (the last may be cut at a sentence end)."""
    question = question.strip()
    fixed = count_tokens(instruction) + (sum(count_tokens(t) for t in example) if example else 0)

    def cost(lines: Sequence[str]) -> int:
        return fixed + count_tokens(_user_message(question, lines))

    if cost([]) > budget_tokens:
        raise GenerationError(
            f"the instruction and question alone exceed the prompt budget of {budget_tokens} tokens",
            hint="ask a shorter question or raise KAG_LLM_N_CTX",
            stage="generate",
        )
    lines: list[str] = []
    sources: list[Source] = []
    for hit in hits:
        number = len(sources) + 1
        line = _source_line(number, hit, hit.text)
        if cost([*lines, line]) <= budget_tokens:
            lines.append(line)
            sources.append(Source(number, hit))
            continue
        # The longest sentence prefix that fits, found by bisection over sentence ends; the hit
        # is cut to match so that `document.text[char_start:char_end] == text` still holds.
        ends = _sentence_ends(hit.text)
        low, high = 0, len(ends) - 1  # the whole text (ends[-1]) is known not to fit
        while low < high:
            mid = (low + high + 1) // 2
            if cost([*lines, _source_line(number, hit, hit.text[: ends[mid - 1]])]) <= budget_tokens:
                low = mid
            else:
                high = mid - 1
        if low > 0:
            cut = hit.text[: ends[low - 1]]
            lines.append(_source_line(number, hit, cut))
            sources.append(Source(number, dataclasses.replace(hit, text=cut, char_end=hit.char_start + len(cut))))
        break
    user = _user_message(question, lines)
    return AnswerPrompt(instruction, example, user, tuple(sources), tokens=cost(lines))


# -- graph extraction with an LLM -------------------------------------------------------------

ENTITY_LABELS = ("PERSON", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "LAW", "WORK_OF_ART", "KEYPHRASE")
_EXTRACT_INSTRUCTION = (
    "List the named entities and key concepts of the text, each name copied exactly as written, and the "
    "relations between them, typed with one of: " + ", ".join(RELATION_TYPES) + ". Strength is your confidence. "
    'Reply with JSON like {"entities": [{"name": "Qdrant", "label": "PRODUCT"}, {"name": "Rust", "label": '
    '"PRODUCT"}], "relations": [{"source": "Qdrant", "type": "Uses", "target": "Rust", "strength": 0.75}]}'
)
_EDGE_PUNCT = " \t\n\"'`.,;:!?()[]{}"


def graph_schema(max_entities: int = 12, max_relations: int = 12) -> dict[str, Any]:
    """JSON schema of the extractor's answer; relation types are the graph ontology."""
    name = {"type": "string", "minLength": 1, "maxLength": 60}

    def obj(**properties: Any) -> dict[str, Any]:
        return {"type": "object", "properties": properties, "required": list(properties)}

    entity = obj(name=name, label={"enum": list(ENTITY_LABELS)})
    # a free "number" lets a small model write digits forever; four levels are enough for ranking
    relation = obj(
        source=name, type={"enum": list(RELATION_TYPES)}, target=name, strength={"enum": [0.25, 0.5, 0.75, 1.0]}
    )
    return obj(
        entities={"type": "array", "items": entity, "maxItems": max_entities},
        relations={"type": "array", "items": relation, "maxItems": max_relations},
    )


def _entity_key(name: str) -> str:
    return _SPACES.sub(" ", name.lower()).strip(_EDGE_PUNCT)


def _occurrences(text: str, surface: str) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) of `surface` in `text`; case-insensitive when lowering keeps offsets."""
    haystack, needle = text, surface
    if surface not in text and len(text.lower()) == len(text) and len(surface.lower()) == len(surface):
        haystack, needle = text.lower(), surface.lower()
    spans, start = [], haystack.find(needle)
    while start >= 0:
        spans.append((start, start + len(needle)))
        start = haystack.find(needle, start + len(needle))
    return spans


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence of `text` that holds [start, end), or the whole text when they span sentences."""
    left = 0
    for stop in _sentence_ends(text):
        if start < stop:
            return (left, stop) if end <= stop else (0, len(text))
        left = stop + len(text[stop:]) - len(text[stop:].lstrip())
    return 0, len(text)


class LLMGraphExtractor:
    """Entities and ontology-typed relations asked of an LLM as schema-constrained JSON, per chunk."""

    def __init__(
        self,
        generator: LlamaGenerator,
        *,
        max_entities: int = 12,
        max_relations: int = 12,
        sampling: SamplingParams | None = None,
    ) -> None:
        self.generator = generator
        self.schema = graph_schema(max_entities, max_relations)
        # greedy, with room for the bounded JSON: extraction should be repeatable, not creative
        self.sampling = sampling or SamplingParams(temperature=0.0, max_tokens=1024)

    def warm_up(self) -> None:
        self.generator.warm_up()

    def extract(self, chunks: Sequence[ChunkDraft]) -> GraphExtraction:
        """Entities, mentions and relations of one document's chunks; entities dedupe across chunks."""
        names: dict[str, str] = {}
        labels: dict[str, str] = {}
        mentions: dict[tuple[str, int, int, int], MentionRecord] = {}
        relations: dict[tuple[str, str, str, int], RelationRecord] = {}
        for chunk in chunks:
            if not chunk.text.strip():
                continue
            prompt = self.generator.render_chat(
                [{"role": "system", "content": _EXTRACT_INSTRUCTION}, {"role": "user", "content": chunk.text}]
            )
            try:
                data = self.generator.complete_json(prompt, self.schema, sampling=self.sampling)
            except GenerationError:
                continue  # one unparsable chunk costs its own entities, not the document's
            located: dict[str, tuple[int, int]] = {}  # entity key -> its first span in this chunk
            for item in data.get("entities", []) if isinstance(data, dict) else ():
                surface = str(item.get("name", "")).strip(_EDGE_PUNCT)
                key = _entity_key(surface)
                spans = _occurrences(chunk.text, surface) if key else []
                if not spans:
                    continue  # the model named something the text does not contain
                names.setdefault(key, chunk.text[spans[0][0] : spans[0][1]])
                labels.setdefault(key, str(item.get("label") or "KEYPHRASE"))
                located.setdefault(key, spans[0])
                for start, end in spans:
                    mentions[(key, chunk.ordinal, start, end)] = MentionRecord(key, chunk.ordinal, start, end)
            for item in data.get("relations", []) if isinstance(data, dict) else ():
                source, target = _entity_key(str(item.get("source", ""))), _entity_key(str(item.get("target", "")))
                kind = item.get("type")
                if source not in located or target not in located or source == target or kind not in RELATION_TYPES:
                    continue
                strength = item.get("strength")
                strength = min(1.0, max(0.0, float(strength))) if isinstance(strength, int | float) else 0.5
                (a_start, a_end), (b_start, b_end) = located[source], located[target]
                evidence = _sentence_around(chunk.text, min(a_start, b_start), max(a_end, b_end))
                dedupe = (source, kind, target, chunk.ordinal)
                if dedupe not in relations or relations[dedupe].strength < strength:
                    relations[dedupe] = RelationRecord(source, target, kind, strength, chunk.ordinal, *evidence)
        entities = tuple(EntityRecord(key=k, name=names[k], label=labels[k]) for k in names)
        return GraphExtraction(entities, tuple(mentions.values()), tuple(relations.values()))
