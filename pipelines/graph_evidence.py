"""What the audit record says about graph evidence: conflicting relations and which one won."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from kag.ledger.graph_view import conflicts_in_chunks
from kag.records import ScoredChunk


def graph_audit(
    ledger: Any, scope: Collection[str], rankings: Mapping[str, Sequence[ScoredChunk]], sources: Sequence[Any]
) -> dict[str, Any]:
    """`{"graph_conflicts": [...]}` when the graph retriever found anything, else `{}`.

    The conflicts are those between entities mentioned in the answer's sources that graph retrieval
    brought: retrieval followed each pair's winner (higher grade, then newer), and an auditor needs to
    see what was set aside."""
    graph_hits = rankings.get("graph") or ()
    if not graph_hits:
        return {}
    from_graph = {h.chunk_id for h in graph_hits} & {s.hit.chunk_id for s in sources}
    return {"graph_conflicts": conflicts_in_chunks(ledger, scope, from_graph) if from_graph else []}
