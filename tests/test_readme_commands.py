"""Every shell command in README.md's fenced blocks is checked against the code, read at run time (the
README changes as features land): each `kag …` parses with the CLI's own options, each `curl` names a
route and method of the OpenAPI schema, each `make` target exists; the cheap ones run for real (`kag …
--help`, `make -n`, Python heredocs compile)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

ROOT = Path(__file__).resolve().parents[1]
SHELLS = {"bash", "sh", "shell", "console"}
SEPARATORS = {"|", "||", "&&", ";", "(", ")", "&"}
#: shell words that start no command of their own
KEYWORDS = {"for", "do", "done", "if", "then", "fi", "while", "export", "in"}


def shell_blocks(markdown: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", markdown, re.DOTALL) if m.group(1) in SHELLS]


@dataclass
class Script:
    commands: list[list[str]] = field(default_factory=list)
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (command line, body)


def parse_block(block: str) -> Script:
    """Simple commands (argv lists) of a block: continuations joined, heredoc bodies set apart, comments
    dropped, split at pipes, `;`, `&&` and `$( … )`."""
    script = Script()
    lines = block.replace("\\\n", " ").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == heredoc.group(1))
            script.heredocs.append((line, "\n".join(lines[i + 1 : end])))
            line = line[: heredoc.start()]
            i = end
        i += 1
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if token in SEPARATORS:
                if current:
                    script.commands.append(current)
                current = []
            else:
                current.append(token.removesuffix("$") if token.endswith("=$") else token)
        if current:
            script.commands.append(current)
    return script


def simple(argv: list[str]) -> list[str]:
    """The command itself: leading assignments and `export` dropped, `docker compose exec SVC` unwrapped."""
    while argv and (argv[0] in KEYWORDS or re.fullmatch(r"\w+\+?=.*", argv[0])):
        argv = argv[1:]
    if argv[:3] == ["docker", "compose", "exec"] and len(argv) > 4:
        argv = argv[4:]
    return argv


def is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def kag_command(args: list[str]) -> tuple[Any, list[str], list[str]]:
    """The CLI command `kag ARGS` names, its subcommand path and the arguments left for it (Typer's own
    Click objects: duck-typed, as Typer may carry its own copy of Click)."""
    from kag.cli import app

    command: Any = get_command(app)
    path: list[str] = []
    rest = list(args)
    while is_group(command) and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return command, path, rest


def kag_problem(args: list[str]) -> str | None:
    """Why `kag ARGS` would not parse, or None: the subcommand path and every option, as Click reads them."""
    command, path, rest = kag_command(args)
    if is_group(command):
        return f"`kag {' '.join(args)}`: no such command (kag {' '.join(path)} has {sorted(command.commands)})"
    try:
        command.make_context(" ".join(["kag", *path]), rest)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error: a bug, shown as is
            raise
        param = getattr(exc, "param", None)
        # a path the reader supplies (`./handbook`, `$EVALDATA/…`) need not exist here
        is_path = type(getattr(param, "type", None)).__name__ == "Path"
        if is_path and "does not exist" in exc.format_message():
            return None
        return f"`kag {' '.join(args)}`: {exc.format_message()}"
    return None


def openapi_paths() -> dict[str, Any]:
    import tempfile

    from kag.api import create_app
    from kag.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        return dict(create_app(Settings(_env_file=None, data_dir=tmp), runtime=object()).openapi()["paths"])


def curl_problem(args: list[str], paths: dict[str, Any]) -> str | None:
    """Why `curl ARGS` names no operation of the API (method + path), or None; a JSON body must parse."""
    method, url, body = None, None, None
    it = iter(args)
    for token in it:
        if token in ("-X", "--request"):
            method = next(it)
        elif token in ("-d", "--data", "--data-raw"):
            body = next(it)
        elif token in ("-F", "--form"):
            next(it)
            method = method or "POST"
        elif token in ("-H", "--header"):
            next(it)
        elif "://" in token:
            url = token
    if url is None:
        return f"`curl {' '.join(args)}`: no URL"
    if body is not None:
        method = method or "POST"
        try:
            json.loads(body)
        except ValueError as exc:
            return f"`curl … -d {body}`: not JSON ({exc})"
    method = (method or "GET").lower()
    path = "/" + url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]
    for template, operations in paths.items():
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), path):
            if method in operations:
                return None
            return f"`curl {url}`: {template} has no {method.upper()} (it has {sorted(operations)})"
    return f"`curl {url}`: no route {path} in the OpenAPI schema"


def expand_arrays(args: list[str], block: str) -> list[str]:
    """`"${name[@]}"` replaced by what the block appends to the array (`name+=(-F "files=@$f")`)."""
    out: list[str] = []
    for arg in args:
        array = re.fullmatch(r"\$\{(\w+)\[@\]\}", arg)
        if array is None:
            out.append(arg)
            continue
        for items in re.findall(rf"\b{array.group(1)}\+=\((.*?)\)", block):
            out.extend(shlex.split(items))
    return out


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    kag: list[list[str]] = field(default_factory=list)
    curl: int = 0
    make: list[str] = field(default_factory=list)
    heredocs: int = 0


def check_markdown(markdown: str, paths: dict[str, Any]) -> Report:
    report = Report()
    targets = make_targets()
    for block in shell_blocks(markdown):
        script = parse_block(block)
        for argv in map(simple, script.commands):
            if not argv:
                continue
            program = argv[0].rsplit("/", 1)[-1]
            if program == "kag":
                report.kag.append(argv[1:])
                report.problems.append(kag_problem(argv[1:]) or "")
            elif program == "curl":
                report.curl += 1
                report.problems.append(curl_problem(expand_arrays(argv[1:], block), paths) or "")
            elif program == "make":
                for target in (a for a in argv[1:] if not a.startswith("-") and "=" not in a):
                    report.make.append(target)
                    if target not in targets:
                        report.problems.append(f"`make {target}`: no such target in the Makefile")
        for line, body in script.heredocs:
            if "python" in line:
                report.heredocs += 1
                try:
                    compile(body, "README heredoc", "exec")
                except SyntaxError as exc:
                    report.problems.append(f"python heredoc does not compile: {exc}")
    report.problems = [p for p in report.problems if p]
    return report


@pytest.fixture(scope="module")
def paths() -> dict[str, Any]:
    return openapi_paths()


@pytest.fixture(scope="module")
def report(paths: dict[str, Any]) -> Report:
    return check_markdown((ROOT / "README.md").read_text(), paths)


def test_every_readme_command_matches_the_cli_the_api_and_the_makefile(report: Report) -> None:
    assert report.problems == []
    # the README really was read: it shows the CLI, the HTTP API and the chores
    assert len(report.kag) >= 10 and report.curl >= 3 and {"demo", "test"} <= set(report.make)


def test_each_kag_command_of_the_readme_has_working_help(report: Report) -> None:
    from typer.testing import CliRunner

    from kag.cli import app

    runner = CliRunner()
    for path in sorted({tuple(kag_command(args)[1]) for args in report.kag}):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (path, result.output)


def test_each_make_target_of_the_readme_runs_as_a_dry_run(report: Report) -> None:
    for target in sorted(set(report.make)):
        out = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (target, out.stderr)


def test_the_checker_catches_what_drifted(paths: dict[str, Any]) -> None:
    """A README whose commands went stale is reported, one problem per stale command."""
    stale = """```bash
.venv/bin/kag ask "q" --collection hr --no-such-option
kag search "q" --k many
kag frobnicate
curl -s http://127.0.0.1:8000/v1/answers
curl -s -X DELETE http://127.0.0.1:8000/v1/ask
curl -s -d '{"question": ' http://127.0.0.1:8000/v1/ask
make deploy
.venv/bin/python - <<'EOF'
print(
EOF
```
"""
    problems = check_markdown(stale, paths).problems
    assert len(problems) == 8, problems
    for needle in ("--no-such-option", "many", "frobnicate", "/v1/answers", "has no DELETE", "not JSON", "deploy"):
        assert any(needle in p for p in problems), (needle, problems)
    good = """```bash
export KAG_KEY=$(.venv/bin/kag keys create demo-admin --role admin)
curl -s -H "Authorization: Bearer $KAG_KEY" http://127.0.0.1:8000/v1/jobs/$JOB
```
"""
    assert check_markdown(good, paths).problems == []
