"""API keys of the service: random secrets stored as sha256 hashes, each with a role and a collection scope."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from kag.errors import AuthenticationError, InvalidRequestError, NotFoundError, StoreError
from kag.ledger.models import ApiKeyRow

if TYPE_CHECKING:
    from kag.ledger import Ledger

SECRET_PREFIX = "kag_"
ALL_COLLECTIONS = "*"
# collection names as the API accepts them in paths: no slashes, no control characters
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Role(StrEnum):
    """What a key may do: admin everything; writer ingest and read; reader read and ask; auditor audit."""

    ADMIN = "admin"
    WRITER = "writer"
    READER = "reader"
    AUDITOR = "auditor"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_collection_name(name: str) -> str:
    """`name` if it is a valid collection name, else InvalidRequestError."""
    if not COLLECTION_NAME.fullmatch(name):
        raise InvalidRequestError(
            f"invalid collection name {name!r}",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the service sees it; the secret itself is never stored."""

    id: str
    name: str
    prefix: str
    role: Role
    collections: tuple[str, ...]
    default_collection: str | None
    rate_limit_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def all_collections(self) -> bool:
        return ALL_COLLECTIONS in self.collections

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def may_use(self, collection: str) -> bool:
        """Whether `collection` is inside this key's scope."""
        return self.all_collections or collection in self.collections

    def scope(self, known: Iterable[str]) -> list[str]:
        """The collections among `known` this key may use, sorted."""
        return sorted(c for c in known if self.may_use(c))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "role": self.role.value,
            "collections": list(self.collections),
            "default_collection": self.default_collection,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
        }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _key(row: ApiKeyRow) -> ApiKey:
    def aware(value: datetime | None) -> datetime | None:
        return None if value is None else (value if value.tzinfo else value.replace(tzinfo=UTC))

    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        role=Role(row.role),
        collections=tuple(row.collections),
        default_collection=row.default_collection,
        rate_limit_per_minute=row.rate_limit_per_minute,
        created_at=aware(row.created_at) or datetime.now(UTC),
        revoked_at=aware(row.revoked_at),
        last_used_at=aware(row.last_used_at),
    )


class KeyStore:
    """Create, list, revoke and check API keys in the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def _translate(self, exc: SQLAlchemyError, action: str) -> StoreError:
        return StoreError(
            f"cannot {action} in the ledger at {self._ledger.safe_url}: {exc.__class__.__name__}: {exc}",
            hint="check KAG_DATABASE_URL and that the database is reachable",
        )

    def create(
        self,
        name: str,
        role: Role | str,
        collections: Sequence[str],
        *,
        default_collection: str | None = None,
        rate_limit_per_minute: int | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is shown once and only its hash is kept."""
        try:
            role = Role(role)
        except ValueError as exc:
            raise InvalidRequestError(
                f"unknown role {role!r}", hint="use one of: " + ", ".join(r.value for r in Role)
            ) from exc
        name = name.strip()
        if not name:
            raise InvalidRequestError("a key needs a name", hint="name it after who or what uses it")
        scope = sorted({c.strip() for c in collections if c.strip()})
        if not scope:
            raise InvalidRequestError(
                "a key needs at least one collection", hint=f"give collection names, or {ALL_COLLECTIONS!r} for all"
            )
        for c in scope:
            if c != ALL_COLLECTIONS:
                check_collection_name(c)
        if default_collection is not None:
            check_collection_name(default_collection)
            if ALL_COLLECTIONS not in scope and default_collection not in scope:
                raise InvalidRequestError(
                    f"the default collection {default_collection!r} is not in the key's collections {scope}"
                )
        if rate_limit_per_minute is not None and rate_limit_per_minute < 0:
            raise InvalidRequestError("rate_limit_per_minute must be >= 0 (0 = unlimited)")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=f"k_{uuid.uuid4().hex[:16]}",
            name=name,
            secret_hash=hash_secret(secret),
            prefix=secret[:12],
            role=role.value,
            collections=scope,
            default_collection=default_collection,
            rate_limit_per_minute=rate_limit_per_minute,
            created_at=datetime.now(UTC),
        )
        try:
            with self._ledger.session() as s:
                s.add(row)
        except SQLAlchemyError as exc:
            raise self._translate(exc, "store the API key") from exc
        return _key(row), secret

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        try:
            with self._ledger.session() as s:
                return [_key(r) for r in s.scalars(query)]
        except SQLAlchemyError as exc:
            raise self._translate(exc, "list API keys") from exc

    def get(self, key_id: str) -> ApiKey:
        try:
            with self._ledger.session() as s:
                row = s.get(ApiKeyRow, key_id)
        except SQLAlchemyError as exc:
            raise self._translate(exc, "read the API key") from exc
        if row is None:
            raise NotFoundError(f"no API key with id {key_id}", hint="list keys with `kag keys list`")
        return _key(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key at once; revoking twice keeps the first time."""
        try:
            with self._ledger.session() as s:
                row = s.get(ApiKeyRow, key_id)
                if row is None:
                    raise NotFoundError(f"no API key with id {key_id}", hint="list keys with `kag keys list`")
                if row.revoked_at is None:
                    row.revoked_at = datetime.now(UTC)
                key = _key(row)
        except SQLAlchemyError as exc:
            raise self._translate(exc, "revoke the API key") from exc
        return key

    def authenticate(self, secret: str) -> ApiKey:
        """The live key for a secret; AuthenticationError for an unknown or revoked one."""
        hint = "send a key as `Authorization: Bearer kag_…` (create one with `kag keys create`)"
        if not secret or not secret.startswith(SECRET_PREFIX):
            raise AuthenticationError("missing or malformed API key", hint=hint)
        try:
            with self._ledger.session() as s:
                row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.secret_hash == hash_secret(secret)))
        except SQLAlchemyError as exc:
            raise self._translate(exc, "check the API key") from exc
        if row is None:
            raise AuthenticationError("unknown API key", hint=hint)
        if row.revoked_at is not None:
            raise AuthenticationError("this API key was revoked", hint="ask an admin for a new key")
        return _key(row)

    def touch(self, key_id: str, when: datetime | None = None) -> None:
        """Record that a key was used."""
        try:
            with self._ledger.session() as s:
                s.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=when or datetime.now(UTC))
                )
        except SQLAlchemyError as exc:
            raise self._translate(exc, "record the API key's use") from exc
