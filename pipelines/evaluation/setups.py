"""Named retrieval setups for `kag eval retrieval`: which retrievers, how fused, which reranker."""

from __future__ import annotations

from dataclasses import dataclass, field

from kag.errors import EvaluationError

#: base name -> the kag retrievers it fuses (one retriever: no fusion)
BASES: dict[str, tuple[str, ...]] = {
    "lexical": ("lexical",),
    "dense": ("dense",),
    "graph": ("graph",),
    "hybrid": ("dense", "lexical"),
    "hybrid+graph": ("dense", "lexical", "graph"),
}
#: the shipped configuration: `kag search` / `kag ask` as the settings make them
DEFAULT = "default"
#: the classic BM25Okapi baseline over whole documents (rank-bm25), outside kag's indexes
BM25_OKAPI = "bm25-okapi"
RERANKERS = ("none", "llm", "cross-encoder")
#: what `kag eval retrieval` runs when --setups is not given
STANDARD_SETUPS = (BM25_OKAPI, "lexical", "dense", "graph", "hybrid", "hybrid+graph", DEFAULT)


@dataclass(frozen=True)
class SetupSpec:
    """A parsed setup name: `BASE[:RERANKER]`, `default[:RERANKER]` or `bm25-okapi`."""

    name: str
    base: str
    retrievers: tuple[str, ...] = ()
    rerank: str | None = None  # None: the settings' reranker (only for `default`)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return self.base == DEFAULT


def parse_setup(name: str) -> SetupSpec:
    """`hybrid`, `hybrid:llm`, `default`, `bm25-okapi`, ...; an unknown name is an EvaluationError."""
    text = name.strip()
    base, _, rerank = text.partition(":")
    known = ", ".join([*BASES, DEFAULT, BM25_OKAPI])
    if base == BM25_OKAPI:
        if rerank:
            raise EvaluationError(f"setup {name!r}: the {BM25_OKAPI} baseline takes no reranker")
        return SetupSpec(text, base)
    if base not in BASES and base != DEFAULT:
        raise EvaluationError(
            f"unknown setup {name!r}", hint=f"a setup is BASE or BASE:RERANKER with BASE one of {known}"
        )
    if rerank and rerank not in RERANKERS:
        raise EvaluationError(
            f"unknown reranker {rerank!r} in setup {name!r}", hint=f"rerankers: {', '.join(RERANKERS)}"
        )
    if base == DEFAULT:
        return SetupSpec(text, base, (), rerank or None)
    return SetupSpec(text, base, BASES[base], rerank or "none")


def parse_setups(names: list[str] | str) -> list[SetupSpec]:
    """Comma-separated or repeated names, in order, without duplicates."""
    raw = [names] if isinstance(names, str) else names
    parts = [p.strip() for item in raw for p in item.split(",") if p.strip()]
    if not parts:
        raise EvaluationError("no setup given", hint="e.g. --setups lexical,dense,hybrid")
    out: list[SetupSpec] = []
    for part in dict.fromkeys(parts):
        out.append(parse_setup(part))
    return out
