"""Who am I, and API key management (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from kag.api.auth import Action, require, services
from kag.api.schemas import KeyCreate, KeyCreated, KeyInfo, KeyList
from kag.keys import ApiKey

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/me", summary="The calling key: role and collections")
def whoami(key: Annotated[ApiKey, Depends(require(Action.WHOAMI))]) -> KeyInfo:
    return KeyInfo(**key.to_dict())


@router.get("/keys", summary="List API keys")
def list_keys(
    request: Request, _: Annotated[ApiKey, Depends(require(Action.KEYS_MANAGE))], include_revoked: bool = False
) -> KeyList:
    keys = services(request).keys.list(include_revoked=include_revoked)
    return KeyList(keys=[KeyInfo(**k.to_dict()) for k in keys])


@router.post("/keys", status_code=201, summary="Create an API key (the secret is shown once)")
def create_key(
    body: KeyCreate, request: Request, _: Annotated[ApiKey, Depends(require(Action.KEYS_MANAGE))]
) -> KeyCreated:
    key, secret = services(request).keys.create(
        body.name,
        body.role,
        body.collections,
        default_collection=body.default_collection,
        rate_limit_per_minute=body.rate_limit_per_minute,
    )
    return KeyCreated(**key.to_dict(), secret=secret)


@router.delete("/keys/{key_id}", summary="Revoke an API key")
def revoke_key(key_id: str, request: Request, _: Annotated[ApiKey, Depends(require(Action.KEYS_MANAGE))]) -> KeyInfo:
    return KeyInfo(**services(request).keys.revoke(key_id).to_dict())
