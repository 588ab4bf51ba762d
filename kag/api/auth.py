"""Authentication (API keys), role permissions and collection scopes, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from kag.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from kag.keys import ApiKey, Role

if TYPE_CHECKING:
    from kag.api.services import Services


class Action(StrEnum):
    """Everything a key may be allowed to do; each route needs exactly one."""

    WHOAMI = "whoami"
    COLLECTIONS_READ = "collections:read"
    COLLECTIONS_CREATE = "collections:create"
    COLLECTIONS_DELETE = "collections:delete"
    DOCUMENTS_READ = "documents:read"
    DOCUMENTS_WRITE = "documents:write"
    JOBS_READ = "jobs:read"
    SEARCH = "search"
    ASK = "ask"
    MODELS = "models"
    AUDIT_READ = "audit:read"
    KEYS_MANAGE = "keys:manage"


_ALL = set(Role)
#: the role x action matrix; tests pin every cell
PERMISSIONS: dict[Action, set[Role]] = {
    Action.WHOAMI: _ALL,
    Action.COLLECTIONS_READ: _ALL,
    Action.COLLECTIONS_CREATE: {Role.ADMIN, Role.WRITER},
    Action.COLLECTIONS_DELETE: {Role.ADMIN},
    # auditors read the sources that answers cite
    Action.DOCUMENTS_READ: _ALL,
    Action.DOCUMENTS_WRITE: {Role.ADMIN, Role.WRITER},
    Action.JOBS_READ: {Role.ADMIN, Role.WRITER},
    Action.SEARCH: {Role.ADMIN, Role.WRITER, Role.READER},
    Action.ASK: {Role.ADMIN, Role.WRITER, Role.READER},
    Action.MODELS: {Role.ADMIN, Role.WRITER, Role.READER},
    Action.AUDIT_READ: {Role.ADMIN, Role.AUDITOR},
    Action.KEYS_MANAGE: {Role.ADMIN},
}

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer kag_…`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key, as an alternative header")


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def require(action: Action) -> Callable[..., Any]:
    """A dependency that authenticates the caller, checks `action` against its role and its rate limit."""
    allowed = PERMISSIONS[action]

    def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> ApiKey:
        svc = services(request)
        secret = bearer.credentials if bearer is not None else header
        if not secret:
            raise AuthenticationError(
                "this endpoint needs an API key",
                hint="send `Authorization: Bearer kag_…` or `X-API-Key: kag_…` (create one with `kag keys create`)",
            )
        key = svc.keys.authenticate(secret)
        request.state.api_key = key
        # the bucket's state goes out as X-RateLimit-* headers on this answer, whatever it is
        request.state.rate_limit = svc.rate_limiter.take(key)
        if request.state.rate_limit is not None and not request.state.rate_limit.allowed:
            svc.rate_limiter.refuse(request.state.rate_limit)
        svc.touch_key(key)
        if key.role not in allowed:
            raise PermissionDeniedError(
                f"{_article(key.role.value)} {key.role.value} key may not {action.value}",
                hint="roles allowed: " + ", ".join(sorted(r.value for r in allowed)),
                role=key.role.value,
                action=action.value,
            )
        return key

    return dependency


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def scoped_collections(
    key: ApiKey, requested: Sequence[str] | None, known: Collection[str], *, use_default: bool = True
) -> list[str]:
    """The collections a request reads: those asked for (each in scope and existing), else the key's
    default collection, else every existing collection in its scope."""
    if requested:
        outside = sorted({c for c in requested if not key.may_use(c)})
        if outside:
            raise PermissionDeniedError(
                f"this key may not use the collection(s) {', '.join(outside)}",
                hint="its collections: " + ", ".join(key.collections),
                collections=outside,
            )
        missing = sorted({c for c in requested if c not in known})
        if missing:
            raise NotFoundError(f"no collection named {', '.join(missing)}", hint="list them with GET /v1/collections")
        return sorted(set(requested))
    if use_default and key.default_collection:
        if key.default_collection not in known:
            raise NotFoundError(
                f"the key's default collection {key.default_collection} does not exist yet",
                hint="upload documents to it first, or name collections in the request",
            )
        return [key.default_collection]
    return key.scope(known)


def check_collection(key: ApiKey, collection: str, known: Collection[str] | None = None) -> None:
    """403 outside the key's scope; 404 if `known` is given and the collection is not in it."""
    if not key.may_use(collection):
        raise PermissionDeniedError(
            f"this key may not use the collection {collection}",
            hint="its collections: " + ", ".join(key.collections),
            collection=collection,
        )
    if known is not None and collection not in known:
        raise NotFoundError(f"no collection named {collection}", hint="list them with GET /v1/collections")
