"""The record file of `kag eval answers`: one JSON line per answered question, flushed as it is written,
so a killed run resumes where it stopped and records of another configuration are never mixed in."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from kag.errors import EvaluationError
from pipelines.evaluation.answers import QuestionResult

#: first line of every record file: what it is and which configuration wrote it
HEADER_KIND = "kag-eval-answers"
FORMAT = 1
_FIELDS = {f.name for f in dataclasses.fields(QuestionResult)}


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """sha256 of the configuration as canonical JSON: equal configurations, equal fingerprints."""
    canonical = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key in value:
            yield from _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for every leaf that differs (keys sorted)."""
    a = dict(_flatten(json.loads(json.dumps(old, default=str))))
    b = dict(_flatten(json.loads(json.dumps(new, default=str))))
    missing = object()
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))
    return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in changed]


class AnswerLog:
    """An append-only JSONL file of `QuestionResult`s written under one configuration.

    Line 1 is a header with the configuration and its fingerprint; every later line is one question's
    result carrying that fingerprint. Opening an existing file with another configuration is an error,
    so a resumed run's summary only ever covers answers of the configuration it reports.
    """

    def __init__(self, path: Path, fingerprint: str, done: dict[str, QuestionResult], handle: IO[str]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.done = done  # question id -> result, as read back or appended
        self._handle = handle

    @classmethod
    def open(cls, path: Path, config: Mapping[str, Any], *, restart: bool = False) -> AnswerLog:
        """Resume from `path` (or start it); `restart` discards what it holds first."""
        fingerprint = config_fingerprint(config)
        path = Path(path)
        done: dict[str, QuestionResult] = {}
        try:
            if restart or not path.exists() or path.stat().st_size == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = path.open("w", encoding="utf-8")
                header = {
                    "kind": HEADER_KIND,
                    "format": FORMAT,
                    "fingerprint": fingerprint,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "config": config,
                }
                cls._write_line(handle, header)
            else:
                done = cls._read(path, config, fingerprint)
                handle = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise EvaluationError(f"cannot write the answer records {path}: {exc.strerror or exc}") from exc
        return cls(path, fingerprint, done, handle)

    @staticmethod
    def _write_line(handle: IO[str], value: Mapping[str, Any]) -> None:
        handle.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())  # a killed or crashed run keeps every question it finished

    @classmethod
    def _read(cls, path: Path, config: Mapping[str, Any], fingerprint: str) -> dict[str, QuestionResult]:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            # the run died while writing its last line: that question is answered again
            data = data[: data.rfind(b"\n") + 1]
            with path.open("r+b") as handle:
                handle.truncate(len(data))
        lines = data.decode("utf-8", errors="replace").splitlines()
        hint = "pass --restart to discard this file, or choose another --out"
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("kind") != HEADER_KIND:
            raise EvaluationError(f"{path} is not a kag answer-record file", hint=hint, path=str(path))
        if header.get("fingerprint") != fingerprint:
            changes = config_changes(header.get("config") or {}, config)
            shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
            raise EvaluationError(
                f"{path} holds {max(len(lines) - 1, 0)} answer record(s) of another configuration "
                f"(changed: {shown or 'the fingerprint'}); they are not mixed with this run's",
                hint="rerun with the same settings and options to resume; " + hint,
                path=str(path),
            )
        done: dict[str, QuestionResult] = {}
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if record.pop("fingerprint", None) != fingerprint:
                    raise ValueError("a record of another configuration")
                result = QuestionResult(**{k: v for k, v in record.items() if k in _FIELDS})
            except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
                raise EvaluationError(
                    f"{path}: line {number} is not a valid answer record ({exc})", hint=hint, path=str(path)
                ) from exc
            done[result.id] = result
        return done

    def append(self, result: QuestionResult) -> None:
        """Write one question's result and flush it to disk before the next question starts."""
        try:
            self._write_line(self._handle, {"fingerprint": self.fingerprint, **dataclasses.asdict(result)})
        except OSError as exc:
            raise EvaluationError(f"cannot write the answer records {self.path}: {exc.strerror or exc}") from exc
        self.done[result.id] = result

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> AnswerLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
