"""Deterministic identities: re-running any write converges instead of duplicating."""

from __future__ import annotations

import hashlib
import uuid

_POINT_NAMESPACE = uuid.UUID("6f2d3c1e-9a4b-5c7d-8e0f-1a2b3c4d5e6f")


def _digest(*parts: object, length: int = 32) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:length]


def document_id(collection: str, source_uri: str) -> str:
    """A document keeps its id across versions: it is the (collection, source) pair."""
    return "d_" + _digest("doc", collection, source_uri, length=24)


def chunk_id(collection: str, doc_id: str, version: int, ordinal: int, text: str) -> str:
    return "c_" + _digest("chunk", collection, doc_id, version, ordinal, text)


def point_id(chunk: str) -> str:
    """The Qdrant point id of a chunk: UUIDv5 of the chunk id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk))


def entity_id(collection: str, key: str) -> str:
    return "e_" + _digest("entity", collection, key, length=24)


def relation_id(collection: str, source: str, rel_type: str, target: str, chunk: str, start: int) -> str:
    return "r_" + _digest("relation", collection, source, rel_type, target, chunk, start, length=24)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
