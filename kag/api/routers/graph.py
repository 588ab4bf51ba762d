"""The knowledge graph for people: an entity's relations and its neighbourhood, inside the key's collections."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from kag.api.auth import Action, require, scoped_collections, services
from kag.keys import ApiKey

router = APIRouter(prefix="/v1/graph", tags=["knowledge graph"])

EntityName = Annotated[str, Path(min_length=1, max_length=500, description="The entity's name, case-insensitive.")]
Collections = Annotated[
    list[str] | None,
    Query(description="Only these collections (repeat the parameter); default every collection of the key."),
]


def _scope(request: Request, key: ApiKey, collection: list[str] | None) -> list[str]:
    svc = services(request)
    # linking looks in each collection separately and only in the key's: the same name in a
    # collection outside the scope is never found, and entity ids never cross collections
    return scoped_collections(key, collection, svc.known_collections(), use_default=False)


@router.get("/entities/{name}", summary="An entity's typed relations with grades and evidence, per collection")
async def get_entity(
    request: Request,
    name: EntityName,
    key: Annotated[ApiKey, Depends(require(Action.DOCUMENTS_READ))],
    collection: Collections = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many relations per collection.")] = 100,
) -> dict[str, Any]:
    from kag.ledger.graph_view import find_entities, relations_of

    scope = _scope(request, key, collection)
    ledger = services(request).runtime.stores.ledger

    def read() -> dict[str, Any]:
        found = find_entities(ledger, scope, name)
        return {
            "entities": [
                {
                    **e.to_dict(),
                    "relations": [r.to_dict() for r in relations_of(ledger, e.collection, [e.entity_id], limit=limit)],
                }
                for e in found
            ]
        }

    return await run_in_threadpool(read)


@router.get(
    "/entities/{name}/neighbourhood",
    summary="The entities within some hops of an entity and the typed relations among them, per collection",
)
async def get_neighbourhood(
    request: Request,
    name: EntityName,
    key: Annotated[ApiKey, Depends(require(Action.DOCUMENTS_READ))],
    collection: Collections = None,
    hops: Annotated[int, Query(ge=1, le=3, description="Relation hops from the entity.")] = 1,
    max_edges: Annotated[int, Query(ge=1, le=1000, description="At most this many relations per collection.")] = 200,
) -> dict[str, Any]:
    from kag.ledger.graph_view import find_entities, neighbourhood

    scope = _scope(request, key, collection)
    ledger = services(request).runtime.stores.ledger

    def read() -> dict[str, Any]:
        found = find_entities(ledger, scope, name)
        return {"neighbourhoods": [neighbourhood(ledger, e, hops, max_edges=max_edges) for e in found]}

    return await run_in_threadpool(read)
