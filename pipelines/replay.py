"""Replay an audited answer: the recorded prompt through the recorded model and sampling, compared
with the recorded output."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kag.audit import AuditEntry
from kag.errors import ModelLoadError, ReplayError
from pipelines.generate import LlamaGenerator, SamplingParams


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The recorded and the replayed model output of one audit record."""

    record_id: str
    model_path: str
    model_sha256: str
    recorded: str
    replayed: str

    @property
    def identical(self) -> bool:
        return self.recorded == self.replayed

    @property
    def first_difference(self) -> int | None:
        """Index of the first differing character, or None when identical."""
        if self.identical:
            return None
        for i, (a, b) in enumerate(zip(self.recorded, self.replayed, strict=False)):
            if a != b:
                return i
        return min(len(self.recorded), len(self.replayed))

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "identical": self.identical,
            "first_difference": self.first_difference,
            "model_path": self.model_path,
            "model_sha256": self.model_sha256,
            "recorded_output": self.recorded,
            "replayed_output": self.replayed,
        }


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def find_model(recorded_path: str, recorded_sha256: str, candidates: list[str]) -> str:
    """A local file with the recorded weights: the recorded path first, then each candidate."""
    for path in [recorded_path, *candidates]:
        if path and Path(path).is_file() and _sha256(path) == recorded_sha256:
            return path
    raise ModelLoadError(
        f"no model file with sha256 {recorded_sha256} was found (recorded at {recorded_path})",
        hint="set KAG_LLM_MODEL to the model (`kag models install NAME`) or GGUF file that answered, then replay again",
        stage="replay",
    )


def replay(
    entry: AuditEntry,
    *,
    candidates: list[str],
    make_generator: Callable[..., LlamaGenerator] = LlamaGenerator,
) -> ReplayReport:
    """Re-run the recorded prompt with the recorded model, context size and sampling (seed included)."""
    body = entry.body
    if not body.get("generated", bool(body.get("raw_output"))):
        raise ReplayError(
            f"audit record {entry.id} has no model output to replay: {body.get('reason') or 'nothing was generated'}",
            hint="only answers the model generated can be replayed",
        )
    model = body.get("model") or {}
    prompt, sampling = body.get("prompt"), body.get("sampling")
    if not isinstance(prompt, str) or not isinstance(sampling, dict) or not model.get("sha256"):
        raise ReplayError(f"audit record {entry.id} lacks the prompt, sampling or model hash needed to replay it")
    path = find_model(str(model.get("path", "")), str(model["sha256"]), candidates)
    try:
        params = SamplingParams(**sampling)
    except TypeError as exc:
        raise ReplayError(f"audit record {entry.id} has sampling parameters this kag does not know: {exc}") from exc
    generator = make_generator(
        path,
        n_ctx=int(model.get("n_ctx") or 4096),
        n_threads=int(model["n_threads"]) if model.get("n_threads") else None,
        n_gpu_layers=int(model.get("n_gpu_layers") or 0),
        sampling=params,
    )
    probe = body.get("answerability") or {}
    recorded = str(body.get("raw_output", ""))
    try:
        if probe.get("probe"):
            # the answer continued the evaluated answerability probe: replay the same two steps
            from pipelines.generate import PROBE_PREFIX

            cut = prompt.rfind(PROBE_PREFIX)
            if cut < 0:
                raise ReplayError(f"audit record {entry.id} says it probed, but its prompt holds no probe")
            generator.yes_probability(prompt[: cut + len(PROBE_PREFIX)])
            replayed = generator.complete(prompt, sampling=params, continue_probe=True).text
        else:
            replayed = generator.complete(prompt, sampling=params).text
    finally:
        generator.close()
    if body.get("stop_reason") == "repetition" and replayed.startswith(recorded):
        replayed = recorded  # kag stopped the stream once it repeated; the model would have gone on
    return ReplayReport(entry.id, path, str(model["sha256"]), recorded, replayed)
