"""Signed checkpoints of the audit chain's head, kept in a file outside the ledger.

The hash chain shows any change to a stored record, but not the loss of its newest records: delete
the last k rows and what is left is still a valid chain. A checkpoint says "the chain had `count`
records and its head was `head`" at `time`, signed with HMAC-SHA256 under a key that the ledger
does not hold. `AuditLog.verify` then fails when the chain is shorter than a checkpoint says
(a removed tail) or its record number `count` has another hash (the chain was rewritten).

One checkpoint is one JSON line::

    {"count": 42, "head": "<sha256 hex>", "mac": "<hmac-sha256 hex>", "seq": 57, "time": "2026-...Z"}

where ``mac = HMAC-SHA256(key, '{"count":42,"head":"…","seq":57,"time":"…"}')`` (the other fields as
canonical JSON: sorted keys, no spaces). Lines are only ever appended; a line whose MAC does not
verify was altered or written without the key, and fails verification.

What it cannot show: lines removed from the end of the file together with the same records from
the ledger (ship the file to another host or an append-only store as it is written), and anything
done by someone who holds the HMAC key and write access to the ledger, who can rewrite both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from kag.errors import ConfigurationError, StoreError

#: the shortest HMAC key accepted, in bytes: shorter keys are guessable
MIN_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed statement about the chain: it held `count` records, the last at `seq` with hash `head`."""

    count: int
    seq: int
    head: str
    time: str
    #: the line of the file it was read from (1-based); 0 for one just written
    line: int = 0


@dataclass(frozen=True, slots=True)
class BadLine:
    """A checkpoint line that cannot be trusted, and why."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class CheckpointRead:
    """Every checkpoint of a file whose MAC verifies, and the lines that do not."""

    path: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def _message(count: int, seq: int, head: str, time: str) -> bytes:
    fields = {"count": count, "head": head, "seq": seq, "time": time}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign(key: bytes, count: int, seq: int, head: str, time: str) -> str:
    """The HMAC-SHA256 (hex) of one checkpoint under `key`."""
    return hmac.new(key, _message(count, seq, head, time), hashlib.sha256).hexdigest()


class CheckpointFile:
    """Append signed checkpoints to a file and read them back, checking each line's MAC."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigurationError(
                f"the audit HMAC key has {len(key)} bytes; it needs at least {MIN_KEY_BYTES}",
                hint="set KAG_AUDIT_HMAC_KEY to a long random secret, e.g. `openssl rand -hex 32`",
            )
        self.path = path
        self._key = key
        # one writer at a time across processes, so lines never interleave
        self._lock = FileLock(str(path) + ".lock")

    def append(self, count: int, seq: int, head: str) -> Checkpoint:
        """Sign and append one checkpoint, flushed to disk before it returns; StoreError if it cannot be."""
        time = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        line = {"count": count, "head": head, "mac": sign(self._key, count, seq, head, time), "seq": seq, "time": time}
        text = json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise StoreError(
                f"cannot write the audit checkpoint file {self.path}: {exc}",
                hint="check KAG_AUDIT_CHECKPOINT_PATH and that its folder is writable",
            ) from exc
        return Checkpoint(count=count, seq=seq, head=head, time=time)

    def read(self) -> CheckpointRead:
        """Every line of the file: good checkpoints in file order, and the lines that fail; StoreError if
        the file cannot be read (a missing file is an error too: it may have been deleted)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise StoreError(
                f"the audit checkpoint file {self.path} does not exist",
                hint="it is written with each answer; write the first one now with `kag audit checkpoint`",
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read the audit checkpoint file {self.path}: {exc}") from exc
        result = CheckpointRead(path=self.path)
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            checkpoint, reason = self._parse(text, number)
            if checkpoint is not None:
                result.checkpoints.append(checkpoint)
            else:
                result.bad.append(BadLine(line=number, reason=reason))
        return result

    def _parse(self, text: str, number: int) -> tuple[Checkpoint | None, str]:
        try:
            data: Any = json.loads(text)
        except ValueError:
            return None, "it is not JSON"
        if not isinstance(data, dict):
            return None, "it is not a JSON object"
        count, seq, head, time, mac = (data.get(k) for k in ("count", "seq", "head", "time", "mac"))
        if not (
            isinstance(count, int)
            and isinstance(seq, int)
            and isinstance(head, str)
            and isinstance(time, str)
            and isinstance(mac, str)
        ):
            return None, "it lacks count, seq, head, time or mac"
        if not hmac.compare_digest(sign(self._key, count, seq, head, time), mac):
            return None, "its HMAC does not verify: it was altered or written without this key"
        return Checkpoint(count=count, seq=seq, head=head, time=time, line=number), ""
