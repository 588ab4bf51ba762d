"""Whether the sources answer the question, judged from the evidence after the answer is verified.

The model's own probe (P(yes) at "Answerable:") barely separates SQuAD 2.0's unanswerable questions
from answerable ones for the small bundled models (0.65-0.85 for both), and no single evidence rule
does either: an unanswerable question is written to look answerable from the same passage. So the
decision combines several signals in a logistic model whose weights are fitted on a tuning sample
(scripts/tune_answerability.py) and stored per model file:

- `probe`: the logit of the model's P(the sources answer the question), read before it writes;
- `coverage`: the best single source sentence's weighted share of the question's content words
  (an answerable question has a sentence that says most of what it asks about);
- `missing`: the weighted share of the question's content words that no source contains at all;
- `cited_coverage`: the share of the question's content words inside the quotes the answer cites;
- `support`: the mean support score of the model's sentences;
- `kept`: the share of the model's sentences that were supported as written (not replaced or dropped).

Every feature is computed from what the verifier saw, so the audit record can show the numbers that
made the decision, and a recorded eval run can be re-decided offline with other weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kag.records import Source, Verification
from pipelines.verify import candidate_spans, content_tokens, is_refusal

FEATURES = ("probe", "coverage", "missing", "cited_coverage", "support", "kept")


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _share(asked: Mapping[str, float], tokens: set[str]) -> float:
    total = sum(asked.values())
    return sum(w for t, w in asked.items() if t in tokens) / total if total else 0.0


def evidence_features(
    question: str, verification: Verification, sources: Sequence[Source], p_answerable: float | None
) -> dict[str, float]:
    """The signals of `FEATURES` for one verified (not abstained) answer."""
    asked = content_tokens(question)
    span_tokens = [set(content_tokens(span.text)) for span in candidate_spans(sources) if span.single]
    everywhere: set[str] = set()
    for source in sources:
        everywhere |= set(content_tokens(source.hit.text))
        everywhere |= set(content_tokens(source.hit.title or ""))
    cited: set[str] = set()
    for citation in verification.citations:
        cited |= set(content_tokens(citation.quote))
    claims = [s for s in verification.sentences if not is_refusal(s.original)]
    return {
        "probe": _logit(p_answerable) if p_answerable is not None else 0.0,
        "coverage": max((_share(asked, tokens) for tokens in span_tokens), default=0.0),
        "missing": 1.0 - _share(asked, everywhere),
        "cited_coverage": _share(asked, cited),
        "support": sum(s.score for s in claims) / len(claims) if claims else 0.0,
        "kept": sum(s.model_supported for s in claims) / len(claims) if claims else 0.0,
    }


@dataclass(frozen=True)
class AnswerabilityModel:
    """A logistic model over `FEATURES`: P(answerable) = sigmoid(bias + sum(weight * (x - mean) / scale))."""

    weights: Mapping[str, float]
    bias: float
    means: Mapping[str, float]
    scales: Mapping[str, float]
    #: least P(answerable) for an answer to be shown; below it kag abstains
    threshold: float
    #: where the weights came from (shown in the audit record)
    fitted_on: str = ""

    def probability(self, features: Mapping[str, float]) -> float:
        z = self.bias
        for name, weight in self.weights.items():
            scale = self.scales.get(name) or 1.0
            z += weight * (features.get(name, 0.0) - self.means.get(name, 0.0)) / scale
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "bias": self.bias,
            "means": dict(self.means),
            "scales": dict(self.scales),
            "threshold": self.threshold,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerabilityModel:
        return cls(
            weights=dict(data["weights"]),
            bias=float(data["bias"]),
            means=dict(data["means"]),
            scales=dict(data["scales"]),
            threshold=float(data["threshold"]),
            fitted_on=str(data.get("fitted_on", "")),
        )


def fit_logistic(
    rows: Sequence[Mapping[str, float]], labels: Sequence[bool], *, l2: float = 1.0, iterations: int = 50
) -> tuple[dict[str, float], float, dict[str, float], dict[str, float]]:
    """L2-regularised logistic regression (Newton's method) over standardised `FEATURES`.

    Returns (weights, bias, means, scales). Written out (about 20 lines of numpy) instead of pulling
    scikit-learn into the runtime for one fit that the tuning script makes offline."""
    import numpy as np

    x = np.array([[float(r.get(f, 0.0)) for f in FEATURES] for r in rows], dtype=float)
    y = np.array([1.0 if v else 0.0 for v in labels])
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - means) / scales])
    w = np.zeros(z.shape[1])
    penalty = np.diag([0.0] + [l2] * len(FEATURES))  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + penalty @ w
        hessian = z.T @ (z * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return (
        {f: float(v) for f, v in zip(FEATURES, w[1:], strict=True)},
        float(w[0]),
        {f: float(v) for f, v in zip(FEATURES, means, strict=True)},
        {f: float(v) for f, v in zip(FEATURES, scales, strict=True)},
    )


#: answerability models fitted per generator file (by the sha256 of its GGUF weights) with
#: scripts/tune_answerability.py on a tuning sample; docs/evaluation.md has the command and results
TUNED: dict[str, AnswerabilityModel] = {
    # qwen2.5-coder-0.5b, fitted on SQuAD 2.0 dev seed 1 (60 questions, 45 verified answers); the threshold
    # is the one with the highest abstention recall there (0.618) that keeps an answer rate of 0.80 (0.808)
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32": AnswerabilityModel(
        weights={
            "probe": 0.48234,
            "coverage": 0.276778,
            "missing": 0.105142,
            "cited_coverage": 0.702755,
            "support": -0.066865,
            "kept": 0.063281,
        },
        bias=-0.093507,
        means={
            "probe": 1.070116,
            "coverage": 0.73215,
            "missing": 0.154903,
            "cited_coverage": 0.63138,
            "support": 0.881713,
            "kept": 0.862963,
        },
        scales={
            "probe": 0.486566,
            "coverage": 0.175044,
            "missing": 0.150846,
            "cited_coverage": 0.307159,
            "support": 0.117166,
            "kept": 0.339369,
        },
        threshold=0.35,
        fitted_on="squad2_dev_5articles seed 1 (60 questions)",
    ),
}


def tuned_answerability(model_sha256: str) -> AnswerabilityModel | None:
    return TUNED.get(model_sha256)
