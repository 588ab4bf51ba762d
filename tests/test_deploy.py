"""The production files, checked without a Docker engine: docker-compose.yml, Dockerfile, .env.example.

What is checked: the compose file parses with the expected services, pinned images, volumes and
healthchecks; every KAG_* variable it or .env.example sets is a real setting; every variable it
interpolates is documented in .env.example; and the Dockerfile installs what `make install` does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {f"KAG_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    # join continuation lines so each instruction is one line
    return re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())


def makefile_var(name: str) -> str:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Makefile").read_text())
    match = re.search(rf"^{name}\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, name
    return " ".join(match.group(1).split())


def dockerfile_arg(dockerfile: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(.+)$", dockerfile, re.MULTILINE)
    assert match, name
    return " ".join(match.group(1).strip().strip('"').split())


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_compose_has_the_services_with_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"qdrant", "postgres", "api", "ray-head", "ray-worker"} <= set(services)
    for name in ("qdrant", "postgres", "api", "ray-head"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["retries"] >= 3, name

    qdrant = services["qdrant"]
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", qdrant["image"])  # pinned, never :latest
    assert "qdrant-storage:/qdrant/storage" in qdrant["volumes"]
    assert "/readyz" in " ".join(qdrant["healthcheck"]["test"])
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+[-\w]*", postgres["image"])
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert {"qdrant-storage", "postgres-data"} <= set(compose["volumes"])


def test_the_api_is_built_here_migrates_first_and_is_checked_on_readyz(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["build"]["dockerfile"] == "Dockerfile" and api["build"]["context"] == "."
    command = " ".join(api["command"])
    assert command.index("kag migrate") < command.index("kag serve")
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["environment"]["PORT"] == "8000"
    for dependency in ("postgres", "qdrant", "ray-head"):
        assert api["depends_on"][dependency]["condition"] == "service_healthy"
    env = api["environment"]
    assert env["KAG_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["KAG_QDRANT_URL"] == "http://qdrant:6333"
    assert env["KAG_LEXICAL_BACKEND"] == "qdrant"  # one lexical index shared by every replica and worker
    assert env["KAG_RAY_ADDRESS"] == "ray://ray-head:10001"


def test_ray_head_and_workers_run_the_kag_image_and_see_the_same_corpus(compose: dict[str, Any]) -> None:
    services = compose["services"]
    head, worker, api = services["ray-head"], services["ray-worker"], services["api"]
    assert head["image"] == worker["image"] == api["image"]  # same code, models and Ray version
    head_cmd = " ".join(head["command"])
    assert "ray start --head" in head_cmd and "--ray-client-server-port=10001" in head_cmd
    assert "--address=ray-head:6379" in " ".join(worker["command"])
    corpus = {v for v in api["volumes"] if v.endswith(":/corpus:ro")}
    assert corpus and all(corpus <= set(s["volumes"]) for s in (head, worker))


def _kag_variables(compose: dict[str, Any]) -> set[str]:
    names = set()
    for service in compose["services"].values():
        names |= {k for k in (service.get("environment") or {}) if k.startswith("KAG_")}
    return names


def test_every_kag_variable_set_is_a_real_setting(compose: dict[str, Any]) -> None:
    in_compose = _kag_variables(compose)
    in_example = {k for k in env_example() if k.startswith("KAG_")}
    assert in_compose and in_example
    # what configures compose itself (CORPUS_DIR, IMAGE, API_PUBLISH_PORT) carries no KAG_ prefix,
    # so every KAG_ name a user sees is a kag setting
    assert in_compose - SETTINGS == set()
    assert in_example - SETTINGS == set()


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))  # $${X} is read in the container
    assert used - set(env_example()) == set()


def test_dockerfile_is_multi_stage_and_builds_llama_for_cpu_or_cuda(dockerfile: str) -> None:
    stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.MULTILINE)
    assert stages == ["build", "runtime"]
    assert "COPY --from=build /opt/venv /opt/venv" in dockerfile
    assert dockerfile_arg(dockerfile, "LLAMA_BACKEND") == "cpu"
    assert dockerfile_arg(dockerfile, "CUDA_CMAKE_ARGS") == "-DGGML_CUDA=on"
    assert 'if [ "$LLAMA_BACKEND" = "cuda" ]; then export CMAKE_ARGS="$CUDA_CMAKE_ARGS"' in dockerfile
    assert "HF_HUB_OFFLINE=1" in dockerfile and "/readyz" in dockerfile
    assert re.search(r'^CMD \["sh", "-c", "kag migrate && exec kag serve"\]$', dockerfile, re.MULTILINE)


def test_dockerfile_installs_what_make_install_does(dockerfile: str) -> None:
    assert dockerfile_arg(dockerfile, "TORCH_VERSION") == makefile_var("TORCH_VERSION")
    assert dockerfile_arg(dockerfile, "LLAMA_VERSION") == makefile_var("LLAMA_VERSION")
    assert dockerfile_arg(dockerfile, "CPU_CMAKE_ARGS") == makefile_var("PORTABLE_CMAKE_ARGS")
    assert "pip install torch==${TORCH_VERSION}" in dockerfile
    assert "pip install --no-deps llama-cpp-python==${LLAMA_VERSION}" in dockerfile
    assert dockerfile_arg(dockerfile, "TORCH_INDEX_URL").endswith("/whl/cpu")  # the CPU wheel by default
    make_install = (ROOT / "Makefile").read_text()
    make_extras = set(re.search(r"-e '\.\[([\w,]+)\]'", make_install).group(1).split(","))
    image_extras = set(re.search(r'pip install "\.\[([\w,]+)\]"', dockerfile).group(1).split(","))
    # the image serves and scales out; test and research tooling (dev, eval) stays out of it
    assert image_extras == make_extras - {"dev", "eval"} == {"ray"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch=={makefile_var("TORCH_VERSION")}"' in pyproject


def test_commands_in_the_deployment_exist() -> None:
    from typer.main import get_command

    from kag.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert {"migrate", "ingest"} <= commands
    ingest = get_command(app).commands["ingest"]  # type: ignore[attr-defined]
    assert {"--executor", "--ray-address"} <= {opt for p in ingest.params for opt in p.opts}


def cmake_args(env: dict[str, str] | None = None) -> dict[str, str]:
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "llama-cmake-args"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return dict(arg.removeprefix("-D").split("=", 1) for arg in out)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="the SIMD levels are read from /proc/cpuinfo (Linux)")
def test_llama_build_uses_this_cpus_simd_levels_and_never_amx() -> None:
    flags = next(
        (
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ),
        [],
    )
    args = cmake_args({"CMAKE_ARGS": ""})
    assert args["GGML_NATIVE"] == "OFF"  # native would turn AMX on where the CPU has it
    assert not any("AMX" in name for name in args)
    if flags:  # x86: an AVX-512 build on a CPU without it dies with "Illegal instruction"
        assert args["GGML_AVX512"] == ("ON" if "avx512f" in flags else "OFF")
        assert args["GGML_AVX2"] == ("ON" if "avx2" in flags else "OFF")
        assert args["GGML_AVX512_VNNI"] == ("ON" if "avx512_vnni" in flags else "OFF")
    # a user's own CMAKE_ARGS (CUDA, Metal) replace the CPU levels entirely
    assert cmake_args({"CMAKE_ARGS": "-DGGML_CUDA=on"}) == {"GGML_CUDA": "on"}


def test_the_image_ships_the_onnx_export_its_runtime_reads(dockerfile: str, tmp_path: Path) -> None:
    """The build stage exports the embedder to ONNX where the runtime stage reads it, and the
    build step's own script works (run here with the export going to a temporary folder)."""
    build, runtime = dockerfile.split("AS runtime", 1)
    assert "ENV KAG_EMBEDDING_ONNX_CACHE_DIR=/opt/kag/onnx" in build
    assert "COPY --from=build /opt/kag/onnx /opt/kag/onnx" in runtime
    assert "KAG_EMBEDDING_ONNX_CACHE_DIR=/opt/kag/onnx" in runtime
    assert set(re.findall(r"\b(KAG_[A-Z0-9_]+)=", dockerfile)) <= SETTINGS
    (script,) = re.findall(r'^RUN python -c "(from kag\.models\.embedder .+)"$', build, re.MULTILINE)
    env = os.environ | {"KAG_EMBEDDING_ONNX_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    assert len(list(tmp_path.glob("*.onnx"))) == 1


_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's variable interpolation: `${X}`, `${X:-default}`, `${X-default}`, `${X:?error}`, `$$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        present = name in variables
        empty = not variables.get(name)
        if op == ":-":
            return arg if empty else variables[name]
        if op == "-":
            return variables[name] if present else arg
        if op in (":?", "?"):
            assert present and not (op == ":?" and empty), f"compose would fail: {arg}"
        return variables.get(name, "")

    return _INTERPOLATION.sub(one, value)


def rendered_environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    """A service's environment as `docker compose config` renders it with `.env.example` as the `.env`
    (anchors and `<<` merges are resolved by the YAML loader; values are interpolated here)."""
    env = compose["services"][service]["environment"]
    return {key: interpolate(str(value), env_example()) for key, value in env.items()}


def runtime_image_env(dockerfile: str) -> dict[str, str]:
    """The `ENV` of the Dockerfile's runtime stage, as the container starts with it."""
    runtime = dockerfile.split("AS runtime", 1)[1]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", runtime, re.MULTILINE):
        for key, value in re.findall(r"(\w+)=(\S*)", line):
            env[key] = value
    return env


def settings_under(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """The settings `kag serve` reads in a container whose environment is exactly `env` (for KAG_*)."""
    for name in list(os.environ):
        if name.startswith("KAG_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_the_image_and_compose_make_the_api_listen_on_every_interface(
    compose: dict[str, Any], dockerfile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.1 inside a container is the container's own loopback: a published port would reach nothing."""
    image = runtime_image_env(dockerfile)
    assert image["KAG_API_HOST"] == "0.0.0.0"
    assert settings_under(monkeypatch, image).api_host == "0.0.0.0"
    # compose's environment is laid over the image's, as the container sees it
    container = {**image, **rendered_environment(compose, "api")}
    settings = settings_under(monkeypatch, container)
    assert settings.api_host == "0.0.0.0"
    assert container["PORT"] == "8000" and settings.database_url.startswith("postgresql+psycopg://kag:change-me@")
    # `docker compose stop` waits out the drain window and the interrupted answers' audit before SIGKILL
    from kag.api.services import INTERRUPT_GRACE_S, shutdown_drain_s

    grace = compose["services"]["api"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > shutdown_drain_s(settings) + INTERRUPT_GRACE_S
    # the host still publishes the port on its own loopback only
    assert compose["services"]["api"]["ports"] == ["127.0.0.1:${API_PUBLISH_PORT:-8000}:8000"]


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${EMPTY-d}/${UNSET-d}/$${SET}", env) == "x/d//d/${SET}"
    with pytest.raises(AssertionError, match="set it"):
        interpolate("${UNSET:?set it}", env)
