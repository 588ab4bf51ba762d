"""`kag eval answers`: every question through the full answer pipeline, one record per question written
as it finishes, so a killed run resumes; the summary is computed over every record of the configuration."""

from __future__ import annotations

import json
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kag.cli.eval import (
    JsonOpt,
    ProgressOpt,
    WorkDirOpt,
    _handle,
    _settings_snapshot,
    err,
    eval_app,
    open_workspace,
    out,
    show_progress,
)
from kag.errors import EvaluationError
from kag.settings import Settings

if TYPE_CHECKING:
    from pipelines.evaluation.answer_log import AnswerLog
    from pipelines.evaluation.answers import QuestionResult
    from pipelines.evaluation.datasets import AnswerDataset, AnswerExample

RECORDS_FILE = "answers.jsonl"

#: settings that cannot change an answer (where stores live, servers, caches); every other setting is
#: part of a run's configuration, so a setting added later is on the safe side: it refuses to mix
_NOT_IN_CONFIG = (
    "data_dir",
    "database_url",
    "qdrant_url",
    "qdrant_api_key",
    "qdrant_collection",
    "qdrant_lexical_collection",
    "embedding_onnx_cache_dir",
    "graph_cache_max_elements",
    "graph_cache_check_seconds",
    "ingest_executor",
)
_NOT_IN_CONFIG_PREFIXES = ("api_", "ray_")


class Policy(StrEnum):
    flag = "flag"
    drop = "drop"
    extractive = "extractive"


@eval_app.command("answers")
def answers_command(
    dataset: Annotated[
        list[Path],
        typer.Option(
            "--dataset",
            "-d",
            help="JSONL of questions (SQuAD-style with a passage corpus, or HotpotQA-style); repeat it to "
            "evaluate several datasets in one run, each into OUT/NAME.",
        ),
    ],
    passages: Annotated[
        Path | None,
        typer.Option(help="BEIR corpus.jsonl of the passages (default: beir/corpus.jsonl beside the file)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Answer only the first N questions (after --sample).")
    ] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="Answer a random sample of N questions per dataset.")] = (
        None
    ),
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    policy: Annotated[Policy | None, typer.Option(help="Verify policy (default KAG_VERIFY_POLICY).")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder: answers.jsonl (one record per question, resumed by a rerun), answers.json/.md/.png "
            "(default eval-results/DATASET-answers).",
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard the records already in the output folder and start over.")
    ] = False,
    work_dir: WorkDirOpt = None,
    progress: ProgressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer every question through the full pipeline: EM/F1, citations, support, abstention, latency.

    Each question's record is written to OUT/answers.jsonl as soon as it is scored; rerunning the same
    command resumes after the last finished question, and refuses records of another configuration."""
    _handle(_answers)(**locals())


def answer_config(
    settings: Settings,
    data: AnswerDataset,
    *,
    sample: int | None,
    seed: int,
    policy: str,
    model_sha256: str,
) -> dict[str, Any]:
    """What decides a question's answer: the record file's fingerprint is the hash of this.

    `--limit` is left out on purpose: it takes a prefix of the same questions, so a larger limit extends
    a finished run instead of starting again."""
    import kag
    from pipelines.evaluation.datasets import file_sha256

    values = settings.model_dump(mode="json")
    kept = {
        k: v for k, v in sorted(values.items()) if k not in _NOT_IN_CONFIG and not k.startswith(_NOT_IN_CONFIG_PREFIXES)
    }
    return {
        "kag": kag.__version__,
        "dataset": {
            "name": data.name,
            "kind": data.kind,
            "sha256": file_sha256(data.path),
            "passages_sha256": data.passages_sha256(),
        },
        "selection": {"sample": sample, "seed": seed if sample else None},
        "policy": policy,
        "model_sha256": model_sha256,
        "settings": kept,
    }


def _model(settings: Settings) -> dict[str, str]:
    """Path and sha256 of the configured GGUF; the constructor only stores the path, so nothing loads."""
    from kag.models.llm_cache import ModelCache, resolve_llm_model
    from pipelines.generate import LlamaGenerator

    generator = LlamaGenerator(resolve_llm_model(settings.llm_model_spec, ModelCache(settings.model_cache_dir)))
    return {"path": generator.model_path, "sha256": generator.model_sha256}


def _answers(
    dataset: list[Path],
    passages: Path | None,
    limit: int | None,
    sample: int | None,
    seed: int,
    policy: Policy | None,
    out_dir: Path | None,
    restart: bool,
    work_dir: Path | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    from pipelines.evaluation import report as reporting
    from pipelines.evaluation.answer_log import AnswerLog
    from pipelines.evaluation.datasets import load_answer_dataset
    from pipelines.evaluation.workspace import default_work_dir

    settings = Settings()
    if passages is not None and len(dataset) > 1:
        raise EvaluationError(
            "--passages names the passages of one dataset, but several --dataset were given",
            hint="put each SQuAD-style file's passages in beir/corpus.jsonl beside it, or run one dataset at a time",
        )
    # every input is checked, and every record file opened, before anything slow starts
    datas = [load_answer_dataset(path, passages) for path in dict.fromkeys(dataset)]
    names = Counter(d.name for d in datas)
    if clash := [n for n, c in names.items() if c > 1]:
        raise EvaluationError(f"two datasets are both named {clash[0]!r}", hint="their output folders would collide")
    chosen_policy = policy.value if policy else settings.verify_policy
    model = _model(settings)
    plans: list[tuple[AnswerDataset, list[AnswerExample], Path]] = []
    for data in datas:
        examples = data.sample(limit=limit, sample=sample, seed=seed)
        repeated = [q for q, c in Counter(e.id for e in examples).items() if c > 1]
        if repeated:
            raise EvaluationError(
                f"{data.path}: question id {repeated[0]!r} occurs more than once",
                hint="each question needs its own id: records are resumed by id",
            )
        if out_dir is None:
            target = Path("eval-results") / f"{data.name}-answers"
        else:
            target = out_dir if len(datas) == 1 else out_dir / data.name
        plans.append((data, examples, target))
    logs: list[AnswerLog] = []
    try:
        for data, _, target in plans:
            reporting.prepare_out_dir(target)
            config = answer_config(
                settings, data, sample=sample, seed=seed, policy=chosen_policy, model_sha256=model["sha256"]
            )
            logs.append(AnswerLog.open(target / RECORDS_FILE, config, restart=restart))
        reports = []
        for (data, examples, target), log in zip(plans, logs, strict=True):
            report = _answer_one(
                settings,
                data,
                examples,
                log,
                chosen_policy,
                model,
                work_dir or default_work_dir(),
                progress,
                {"limit": limit, "sample": sample, "seed": seed if sample else None},
            )
            _write_report(target, report)
            reports.append((target, report))
    finally:
        for log in logs:
            log.close()
    if as_json:
        body: Any = reports[0][1] if len(reports) == 1 else {r["dataset"]: r for _, r in reports}
        out.out(json.dumps(body, indent=2, default=str))
        return
    for target, report in reports:
        out.print(reporting.answers_markdown(report), highlight=False, markup=False, soft_wrap=True)
        out.print(
            f"wrote {target}/answers.md, answers.json, answers.png; {report['records']['file']} holds "
            f"{report['questions']} records ({report['records']['resumed']} from an earlier run)",
            highlight=False,
        )


def _answer_one(
    settings: Settings,
    data: AnswerDataset,
    examples: list[AnswerExample],
    log: AnswerLog,
    policy: str,
    model: dict[str, str],
    work_dir: Path,
    progress: bool | None,
    selection: dict[str, Any],
) -> dict[str, Any]:
    from kag.cli.progress import AnswerProgress
    from pipelines.evaluation.answers import EvidenceMap, as_dicts, run_answers, stage_latency, summarize
    from pipelines.evaluation.workspace import COLLECTION

    resumed = [e for e in examples if e.id in log.done]
    todo = [e for e in examples if e.id not in log.done]
    if resumed:
        err.print(
            f"{data.name}: resuming from {log.path}: {len(resumed)} of {len(examples)} questions already answered",
            highlight=False,
            soft_wrap=True,
        )
    started = time.perf_counter()
    rt, workspace = open_workspace(
        settings,
        work_dir,
        f"{data.name}-passages",
        data.passages_sha256(),
        lambda: list(data.passages.values()),
        progress=progress,
    )
    try:
        if todo:
            evidence = EvidenceMap(rt.stores.ledger, COLLECTION, workspace.corpus_id, data.passages)
            pipeline = rt.answer_pipeline

            def answer(question: str) -> Any:
                return pipeline.answer(question, [COLLECTION], principal="kag-eval", policy=policy)

            with AnswerProgress(err, data.name, len(examples), enabled=show_progress(progress)) as bar:
                for example in resumed:
                    bar.add(log.done[example.id])

                def record(result: QuestionResult) -> None:
                    log.append(result)
                    bar.add(result)

                run_answers(todo, answer, evidence, on_result=record)
            model = {"path": rt.generator.model_path, "sha256": rt.generator.model_sha256}
    finally:
        rt.close()
    results = [log.done[e.id] for e in examples]  # every record of this selection, in dataset order
    return {
        "dataset": data.name,
        "kind": data.kind,
        "questions": len(results),
        "of_total": len(data.examples),
        "selection": selection,
        "answerable": sum(not r.is_impossible for r in results),
        "unanswerable": sum(r.is_impossible for r in results),
        "policy": policy,
        "seconds": round(time.perf_counter() - started, 1),
        "records": {
            "file": str(log.path),
            "fingerprint": log.fingerprint,
            "resumed": len(resumed),
            "answered_now": len(todo),
        },
        "model": model,
        "settings": _settings_snapshot(rt.settings)
        | {
            k: getattr(rt.settings, k)
            for k in ("support_threshold", "abstain_threshold", "context_chunks", "llm_max_tokens")
        },
        "index": {"path": str(workspace.root), **workspace.manifest.get("ingest", {})},
        "metrics": summarize(results),
        "latency_ms": stage_latency(results),
        "per_question": as_dicts(results),
    }


def _write_report(target: Path, report: dict[str, Any]) -> None:
    from pipelines.evaluation import report as reporting

    reporting.write_json(target / "answers.json", report)
    (target / "answers.md").write_text(reporting.answers_markdown(report))
    reporting.answers_plot(target / "answers.png", report)
