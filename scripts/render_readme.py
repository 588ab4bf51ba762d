"""Regenerate the README's configuration table and CLI reference from the code (`make docs`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kag.cli import cli_reference, settings_markdown  # noqa: E402

README = REPO / "README.md"


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
