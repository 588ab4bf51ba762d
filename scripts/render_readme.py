"""Regenerate the README's configuration table and CLI reference from the code (`make docs`)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from kag.cli import app, settings_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
COMMANDS = ["ingest", "search", "delete", "doctor", "reindex", "collections", "documents", "jobs", "config"]


def cli_reference() -> str:
    runner = CliRunner()
    parts = []
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        parts.append(f"#### `kag {name}`\n\n```text\n{result.output.strip()}\n```\n")
    return "\n".join(parts)


def replace(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no {marker} markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> None:
    text = README.read_text()
    text = replace(text, "settings", settings_markdown())
    text = replace(text, "cli", cli_reference())
    README.write_text(text)


if __name__ == "__main__":
    main()
