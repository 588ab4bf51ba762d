"""README.md's shell examples, read at run time (the README changes as features land).

Statically, every command: each `kag …` parses with the CLI's own options, each `curl` names a route and
method of the OpenAPI schema, each `make` target exists; the cheap ones run (`kag … --help`, `make -n`,
Python heredocs compile). For real (marked slow): each statement that can run in CI runs as the README
writes it, through bash, in a scratch folder over a temporary data dir and against a live `kag serve` on
loopback, and its documented result is checked. The rest are listed in NOT_RUN with the reason, so a new
README statement that is neither run nor listed fails `test_every_readme_statement_is_run_or_listed`."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from tests.readme_runner import README_URL, ROOT, Demo, Workspace, flat, matching, shell_blocks, statements

SEPARATORS = {"|", "||", "&&", ";", "(", ")", "&"}
#: shell words that start no command of their own
KEYWORDS = {"for", "do", "done", "if", "then", "fi", "while", "export", "in"}


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


# --- the examples, run ---------------------------------------------------------------------------------

#: what the slow tests below run, by test: a name and a pattern that finds exactly one README statement
RUN: dict[str, dict[str, str]] = {
    "service": {
        "make serve": r"^make serve\b",
        "admin key": r"^export KAG_KEY=\$\(\.venv/bin/kag keys create demo-admin --role admin\)$",
        "upload args": r"^args=\(\); for f in data/",
        "upload": r"^JOB=\$\(curl .*/v1/collections/demo/documents",
        "job": r"^curl -s .*/v1/jobs/\$JOB$",
        "ask": r"^curl -s -H (?!.*\"stream\").*/v1/ask$",
        "ask stream": r"^curl -sN .*\"stream\": true.*/v1/ask$",
        "openai": r"^\.venv/bin/python - <<'EOF' import os, openai",
        "auditor key": r"^\.venv/bin/kag keys create demo-auditor --role auditor",
    },
    "cli": {
        "ingest": r"^\.venv/bin/kag ingest \./handbook ",
        "search": r"^\.venv/bin/kag search ",
        "doctor": r"^\.venv/bin/kag doctor( +#|$)",
    },
    "audit": {
        "chat": r"^printf .* \| \.venv/bin/kag ask --chat -c demo$",
        "audit list": r"^\.venv/bin/kag audit list ",
        "audit show": r"^\.venv/bin/kag audit show a_…",
        "audit verify": r"^\.venv/bin/kag audit verify( +#|$)",
        "audit replay": r"^\.venv/bin/kag audit replay a_…",
        "audit head": r"^\.venv/bin/kag audit head( +#|$)",
        "audit expect head": r"^\.venv/bin/kag audit verify --expect-head HASH",
    },
    "eval": {
        "eval retrieval": r"^kag eval retrieval --dataset \$EVALDATA/scifact ",
        "eval tune": r"^kag eval tune --dataset \$EVALDATA/scifact ",
    },
}

#: README statements that CI cannot run, by pattern, with the reason
NOT_RUN: dict[str, str] = {
    r"^make demo\b": "it installs the default generator, qwen2.5-coder-0.5b (a 491 MB model CI never downloads: "
    "the suite runs on SmolLM2); its other steps (ingest data/, search, doctor, ask, audit verify) run here "
    "as the README's own statements",
    r"^make test\b": "the suite this test belongs to (.ci/run runs it and its slow tier)",
    r"^\.venv/bin/kag ask (\"[^\"…]+\" -c demo|\"…\" -c demo --(stream|json|policy)\b)": "each is one more "
    "answer by the LLM (about 20 s a process on 2 cores); the --chat statement runs here, /v1/ask runs plain "
    "and streamed, and tests/kag/cli/test_ask_cli.py runs these flags",
    r"^kag eval answers ": "it answers every sampled question with the LLM (minutes); "
    "tests/kag/cli/test_eval_answers_cli.py runs it end to end with a scripted generator",
    r"^cp \.env\.example \.env": "the Docker Compose set-up, and it writes the checkout's .env; "
    "tests/test_deploy.py checks .env.example",
    r"^docker compose ": "needs a Docker engine, an image build (about 10 minutes) and a Ray cluster; "
    "tests/test_deploy.py checks the compose file and the Dockerfile without them",
}

RUN_PATTERNS = {name: pattern for group in RUN.values() for name, pattern in group.items()}


def test_every_readme_statement_is_run_or_listed() -> None:
    found = statements((ROOT / "README.md").read_text())
    for name, pattern in RUN_PATTERNS.items():
        hits = [flat(s) for s in matching(pattern, found)]
        assert len(hits) == 1, f"RUN[{name!r}] must find one README statement, found {hits}"
    for pattern in NOT_RUN:
        assert matching(pattern, found), f"NOT_RUN lists {pattern!r}, which no README statement matches any more"
    for statement in found:
        owners = [p for p in [*RUN_PATTERNS.values(), *NOT_RUN] if re.search(p, flat(statement))]
        assert len(owners) == 1, (
            f"README statement `{flat(statement)}` must be run by a test here (RUN) or listed in NOT_RUN "
            f"with the reason it cannot run in CI; it matches {owners}"
        )
    assert len(found) >= 30


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace.create(tmp_path_factory.mktemp("readme"), RUN_PATTERNS)


@pytest.fixture(scope="module")
def demo(ws: Workspace) -> Iterator[Demo]:
    from tests.kag.api.live import LiveServer

    # `make serve` is `.venv/bin/kag serve` after `make install`: that command is started here
    recipe = re.search(r"^serve:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe and recipe.group(1) == "$(BIN)/kag serve", "`make serve` no longer runs `kag serve`"
    ws.ran.add("make serve")
    server = LiveServer(Path(ws.env["KAG_DATA_DIR"]), env=ws.env, log=ws.root / "serve.log").start()
    ws.subs[README_URL] = server.url
    try:
        # step 2: the secret is printed once
        made = ws.run("admin key", after='\nprintf "%s" "$KAG_KEY"')
        key = made.stdout.strip()
        assert re.fullmatch(r"\S{20,}", key), made.stdout
        assert "created admin key" in made.stderr and "not shown again" in made.stderr
        # step 3: upload, then "repeat the last command until "status":"completed""
        job_id = ws.run("upload args", "upload", after='\nprintf "%s" "$JOB"', env={"KAG_KEY": key}).stdout
        job: dict[str, Any] = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            job = json.loads(ws.run("job", env={"KAG_KEY": key, "JOB": job_id}).stdout)
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(2)
        yield Demo(server, key, job)
    finally:
        server.stop()


def json_body(curl: str) -> Any:
    """The JSON a curl statement sends (`-d '{…}'`)."""
    body = re.search(r"-d '(\{.*?\})'", flat(curl))
    assert body, curl
    return json.loads(body[1])


def data_files() -> list[Path]:
    """What step 3 uploads: `data/*/*`."""
    return sorted((ROOT / "data").glob("*/*"))


@pytest.mark.slow
def test_the_service_examples_give_the_documented_results(ws: Workspace, demo: Demo) -> None:
    import httpx

    from tests.kag.api.test_endpoints import parse_sse

    # 1. "ready when `curl -s http://127.0.0.1:8000/readyz` says "status":"ready""
    ready = subprocess.run(["curl", "-s", f"{demo.server.url}/readyz"], capture_output=True, text=True, timeout=60)
    assert '"status":"ready"' in ready.stdout, ready.stdout
    # 2. an admin key
    me = demo.get("/v1/me").json()
    assert me["name"] == "demo-admin" and me["role"] == "admin", me
    # 3. every file went in, by a completed job showing progress, counts and per-file errors
    job = demo.job
    assert job["status"] == "completed", job
    assert job["files_total"] == job["documents_added"] == len(data_files()), job
    assert job["documents_failed"] == 0 and job["errors"] == [] and job["progress"] == pytest.approx(1.0), job

    # 4. a verified answer, each sentence's verdict, citations with character offsets and quotes, the audit id;
    # streamed: `token` events, then one `final` event
    key = {"KAG_KEY": demo.key}
    questions = [json_body(ws.statement(name))["question"] for name in ("ask", "ask stream")]
    answer = json.loads(ws.run("ask", env=key).stdout)
    events = parse_sse(ws.run("ask stream", env=key).stdout)
    names = [name for name, _ in events]
    assert names[-1] == "final" and set(names[:-1]) <= {"token"}, names
    final = json.loads(events[-1][1])
    assert final["abstained"] or "token" in names, names
    for result, question in zip((answer, final), questions, strict=True):
        assert result["question"] == question and result["audit_id"].startswith("a_"), result
        assert all({"supported", "label", "score", "citations"} <= set(s) for s in result["sentences"]), result
        assert result["citations"] or result["answer"] == "The sources do not answer this.", result
        for c in result["citations"]:  # document.text[char_start:char_end] is the quote
            span = demo.get(f"/v1/documents/{c['document_id']}/text?start={c['char_start']}&end={c['char_end']}")
            assert span.json()["text"] == c["quote"], c
    assert answer["citations"] or final["citations"], "neither /v1/ask example cites a source"

    # 5. the openai client: the verified answer is the message content, citations ride along
    printed = ws.run("openai", env=key).stdout.splitlines()
    (newest,) = demo.get("/v1/audit?limit=1").json()["records"]
    content = re.search(r'"content": "([^"]+)"', ws.statement("openai"))
    assert content and newest["question"] == content[1], newest
    assert "\n".join(printed).startswith(newest["answer"]), (printed, newest)
    cited = printed[len(newest["answer"].splitlines()) :]
    assert all(re.fullmatch(r"\[\d+\] .+ \[\d+:\d+\] '.*'", line) for line in cited), cited
    assert newest["abstained"] or cited

    # 6. an auditor key: the review page, the audit log and its exports; it cannot ask
    auditor = ws.run("auditor key").stdout.strip()
    assert demo.get("/ui/audit", auditor).status_code == 200
    records = demo.get("/v1/audit", auditor).json()["records"]
    assert len(records) == 3 and {r["principal_name"] for r in records} == {"demo-admin"}
    assert demo.get("/v1/audit/verify", auditor).json()["ok"] is True
    export = demo.get("/v1/audit/export?format=csv", auditor)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    refused = httpx.post(
        f"{demo.server.url}/v1/ask",
        json={"question": "What caused incident INC-3107?", "collections": ["demo"]},
        headers={"Authorization": f"Bearer {auditor}"},
        timeout=60,
    )
    assert refused.status_code == 403 and refused.json()["error"]["status"] == 403

    # the server extracts the graph of the uploaded documents in the background (stage 2)
    deadline = time.monotonic() + 300
    while (job := demo.get(f"/v1/jobs/{job['id']}").json())["stage"] != "done" and time.monotonic() < deadline:
        time.sleep(2)
    assert job["graph_done"] == len(data_files()) and job["graph_failed"] == 0, job
    ws.ran_all(RUN["service"])


@pytest.mark.slow
def test_the_cli_examples_give_the_documented_results(ws: Workspace, demo: Demo) -> None:
    demo.server.stop()  # "stop it before running `kag ingest` … against the same data dir"
    files = sorted((ws.root / "handbook").iterdir()) + sorted((ws.root / "wiki").glob("*/*.html"))
    first = ws.run("ingest").stdout
    added = re.search(r"job (\w+): (\d+) added, 0 updated, 0 unchanged, 0 failed, 0 deleted; (\d+) chunks", first)
    assert added and int(added[2]) == len(files) and int(added[3]) > 0, first
    assert f"graph: {len(files)} documents done, 0 failed" in first
    # idempotent: an unchanged file costs nothing
    again = ws.run("ingest").stdout
    assert f"0 added, 0 updated, {len(files)} unchanged, 0 failed, 0 deleted; 0 chunks" in again, again

    found = ws.run("search").stdout
    hits = re.findall(r"^(\d+)\. (.+?) (?:p\.\d+ )?\[\d+:\d+\] score=\S+ (\S+)$", found, re.MULTILINE)
    k = re.search(r"--k (\d+)", ws.statement("search"))
    assert k and [int(rank) for rank, _, _ in hits] == list(range(1, int(k[1]) + 1)), found
    assert hits[0][1] == "Paid Time Off and Leave" and {c for _, _, c in hits} == {"hr"}, found

    # ledger vs Qdrant vs Tantivy vs graph, per collection
    report = ws.run("doctor").stdout
    rows = re.findall(r"^│ (\w+) +│ (\d+) +│ (\d+) +│ (\d+) +│ \d+ +│ \d+ +│ (\w+) +│$", report, re.MULTILINE)
    assert {r[0] for r in rows} == {"demo", "hr"} and all(r[1] == r[2] == r[3] != "0" for r in rows), report
    assert {r[4] for r in rows} == {"consistent"} and report.rstrip().endswith("consistent"), report
    # exit 1 on drift: a document a killed run left `indexing`; `kag doctor --repair` re-derives it
    ws.sql("UPDATE documents SET status = 'indexing' WHERE id = (SELECT min(id) FROM documents)")
    drift = ws.run("doctor", code=1).stdout
    assert "1 documents left indexing" in drift and "drift found" in drift, drift
    assert ws.kag("doctor", "--repair").rstrip().endswith("consistent")

    # the listings the README names, from the ledger alone
    counts = {c["collection"]: c["documents"] for c in json.loads(ws.kag("collections", "--json"))}
    assert counts == {"demo": len(data_files()), "hr": len(files)}
    # sources shown relative to the folder they were ingested from, never the full path
    sources = [Path(d["source_uri"]) for d in json.loads(ws.kag("documents", "-c", "hr", "--json"))]
    assert sorted(s.name for s in sources) == sorted(f.name for f in files)
    assert not any(s.is_absolute() or str(ws.root) in str(s) for s in sources), sources
    job = json.loads(ws.kag("jobs", added[1]))
    assert job["documents_added"] == len(files) and job["errors"] == [] and job["graph"]["done"] == len(files)
    entity = ws.kag("graph", "show", "Burrow", "-c", "hr")
    assert re.match(r"Burrow \(\w+\) in hr: \d+ mentions, [1-9]\d* relations", entity), entity
    assert "demo-admin" in ws.kag("keys", "list")
    ws.ran_all(RUN["cli"])


@pytest.mark.slow
def test_the_answer_and_audit_examples_give_the_documented_results(ws: Workspace, demo: Demo) -> None:
    demo.server.stop()  # `kag ask` opens the stores the server holds
    asked = [q for q in ws.statement("chat").split("'")[1].split("\\n") if q]  # printf 'Q1\nQ2\n'
    chat = ws.run("chat").stdout
    ids = re.findall(r"^audit record (a_\w+)$", chat, re.MULTILINE)
    assert len(ids) == len(asked) == 2, chat
    # the whole record as JSON: the follow-up keeps the turns, the question as asked and the one answered
    record = json.loads(ws.run("audit show", audit_id=ids[1]).stdout)
    conversation = record["body"]["conversation"]
    assert record["id"] == ids[1] and record["intact"] is True
    assert conversation["asked"] == asked[1] and conversation["turns"][0] == ["user", asked[0]], conversation
    if record["question"] != asked[1]:
        assert f"(asked as: {record['question']})" in chat

    listed = ws.run("audit list").stdout
    assert re.findall(r"^│ (a_\w+) +│ [\d-]+ [\d:]+ +│ cli ", listed, re.MULTILINE) == ids[::-1], listed

    replayed = ws.run("audit replay", audit_id=ids[0]).stdout
    assert replayed.startswith("replay identical: "), replayed

    total = ws.sql("SELECT count(*) FROM audit_records")[0][0]
    assert ws.run("audit verify").stdout.strip() == f"audit chain intact: {total} records"
    head = re.fullmatch(r"([0-9a-f]{64}) (\d+) records\n", ws.run("audit head").stdout)
    assert head and int(head[2]) == total
    kept = ws.run("audit expect head", HASH=head[1]).stdout
    assert kept.strip() == f"audit chain intact: {total} records (the expected head is in it)"

    # exit 1 naming the first altered record
    ws.sql("UPDATE audit_records SET question = 'What is the CEO paid?' WHERE id = ?", ids[0])
    broken = ws.run("audit verify", code=1).stderr
    assert broken.startswith(f"Error: audit chain broken at record {ids[0]} "), broken
    ws.sql("UPDATE audit_records SET question = ? WHERE id = ?", asked[0], ids[0])
    # the newest record removed: the chain alone still verifies, the noted head does not
    ws.sql("DELETE FROM audit_records WHERE seq = (SELECT max(seq) FROM audit_records)")
    assert ws.run("audit verify").stdout.strip() == f"audit chain intact: {total - 1} records"
    assert "Error: " in ws.run("audit expect head", code=1, HASH=head[1]).stderr
    ws.ran_all(RUN["audit"])


@pytest.mark.slow
def test_the_eval_examples_give_the_documented_results(ws: Workspace) -> None:
    table = ws.run("eval retrieval").stdout
    header = next(line for line in table.splitlines() if line.startswith("| setup |"))
    for column in ("nDCG@10", "R@10", "R@100", "MRR@10", "MAP", "p50 ms", "p95 ms"):
        assert f"| {column} |" in header, header
    assert "paired student test" in table
    out = ws.root / "eval-results" / "scifact-test"
    assert {p.name for p in out.iterdir()} >= {"retrieval.md", "retrieval.json", "retrieval.png", "runs"}
    report = json.loads((out / "retrieval.json").read_text())
    assert report["queries"] == 3 and all(len(s["per_query"]) == 3 for s in report["setups"])
    assert {p.name for p in (out / "runs").iterdir()} == {"qrels.txt"} | {f"{s['name']}.trec" for s in report["setups"]}
    for run in (out / "runs").glob("*.trec"):  # qid Q0 docid rank score tag
        for line in run.read_text().splitlines():
            assert re.fullmatch(rf"\S+ Q0 \S+ \d+ -?[\d.e-]+ {re.escape(run.stem)}", line), (run.name, line)

    sweep = ws.run("eval tune").stdout
    assert sweep.startswith("# Fusion sweep: scifact train") and "wrote eval-results/scifact-train-tune/" in sweep
    assert json.loads((ws.root / "eval-results" / "scifact-train-tune" / "tune.json").read_text())
    ws.ran_all(RUN["eval"])
