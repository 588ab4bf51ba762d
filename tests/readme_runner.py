"""Run README.md's shell statements as written, through bash, in a scratch folder: the pieces behind
tests/test_readme_commands.py's slow tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHELLS = {"bash", "sh", "shell", "console"}
#: the server address the README's examples use; a live server's replaces it
README_URL = "http://127.0.0.1:8000"
BIN = Path(sys.executable).parent
#: keyword names of `Workspace.run` for placeholders that are no Python names
SUBS = {"audit_id": "a_…"}


def shell_blocks(markdown: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", markdown, re.DOTALL) if m.group(1) in SHELLS]


def statements(markdown: str) -> list[str]:
    """Each statement of the shell blocks as bash reads it: continuation lines, and a heredoc's body with
    the line that opens it; comment lines are left out."""
    found = []
    for block in shell_blocks(markdown):
        lines, i = block.splitlines(), 0
        while i < len(lines):
            start = i
            while lines[i].endswith("\\") and i + 1 < len(lines):
                i += 1
            heredoc = re.search(r"<<-?\s*'?(\w+)'?", lines[i])
            if heredoc:
                i = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == heredoc.group(1))
            text = "\n".join(lines[start : i + 1]).strip()
            if text and not text.startswith("#"):
                found.append(text)
            i += 1
    return found


def flat(statement: str) -> str:
    """A statement on one line, whitespace collapsed: what patterns of statements are searched in."""
    return " ".join(statement.replace("\\\n", " ").split())


def matching(pattern: str, found: list[str]) -> list[str]:
    return [s for s in found if re.search(pattern, flat(s))]


@dataclass
class Workspace:
    """A scratch folder the README's statements run in, through bash: its placeholder paths are real files
    there, `.venv/bin/` is this interpreter's, `kag` commands use a temporary data dir and, once a server
    runs, `http://127.0.0.1:8000` is its address. Statements are found by name, through `patterns`."""

    root: Path
    env: dict[str, str]
    statements: list[str]
    patterns: dict[str, str]
    subs: dict[str, str] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, root: Path, patterns: dict[str, str]) -> Workspace:
        """`./handbook` and `./wiki/**/*.html` from the demo corpus, `data/` (which step 3 of "Service"
        uploads), `$EVALDATA/scifact` as a tiny BEIR folder; caches and the data dir inside `root`."""
        from tests.kag.cli.test_eval_cli import write_beir

        shutil.copytree(ROOT / "data" / "handbook", root / "handbook")
        for group in ("engineering", "products"):  # HTML pages one folder down
            (root / "wiki" / group).mkdir(parents=True)
            for page in (ROOT / "data" / group).glob("*.html"):
                shutil.copy(page, root / "wiki" / group)
        (root / "data").symlink_to(ROOT / "data")
        write_beir(root / "evaldata" / "scifact")
        env = {
            **os.environ,
            "KAG_DATA_DIR": str(root / "kag-data"),
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # `kag eval …` without .venv/bin/
            "EVALDATA": str(root / "evaldata"),
            "XDG_CACHE_HOME": str(root / "cache"),  # the evaluation index cache (~/.cache/kag/eval)
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "COLUMNS": "200",  # rich wraps at 80 columns when stdout is no terminal
            "NO_COLOR": "1",
        }
        for name in ("KAG_API_HOST", "KAG_API_PORT", "PORT"):  # a server's port is its own
            env.pop(name, None)
        markdown = (ROOT / "README.md").read_text()
        return cls(root, env, statements(markdown), patterns, subs={".venv/bin/": f"{BIN}/"})

    @property
    def ledger_path(self) -> Path:
        return Path(self.env["KAG_DATA_DIR"]) / "ledger.sqlite3"

    def statement(self, name: str) -> str:
        (text,) = matching(self.patterns[name], self.statements)
        return text

    def run(
        self, *names: str, code: int | None = 0, after: str = "", env: dict[str, str] | None = None, **subs: str
    ) -> subprocess.CompletedProcess[str]:
        """The named statements as one bash script (`after` appended), placeholders replaced: each keyword
        argument is `PLACEHOLDER=value` (`a_…` is `audit_id`)."""
        script = "\n".join(self.statement(n) for n in names)
        for old, new in {**self.subs, **{SUBS.get(k, k): v for k, v in subs.items()}}.items():
            script = script.replace(old, new)
        self.ran.update(names)
        proc = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script + after],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if code is not None:
            assert proc.returncode == code, (
                f"`{flat(script)}` exited {proc.returncode}, not {code}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def kag(self, *args: str, code: int = 0) -> str:
        """A command the README's prose names (`kag doctor --repair`, `kag documents`): its stdout."""
        proc = subprocess.run(
            [str(BIN / "kag"), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == code, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc.stdout

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        """Change the ledger behind kag's back, as a crash or an attacker would."""
        import sqlite3

        conn = sqlite3.connect(self.ledger_path)
        try:
            with conn:
                return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def ran_all(self, names: Iterable[str]) -> None:
        assert set(names) <= self.ran, f"not run: {set(names) - self.ran}"


@dataclass
class Demo:
    """Steps 1-3 of the README's "Service": a live server, its admin key and the demo corpus's upload job."""

    server: Any
    key: str
    job: dict[str, Any]

    def get(self, path: str, key: str | None = None) -> Any:
        import httpx

        return httpx.get(self.server.url + path, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=60)
