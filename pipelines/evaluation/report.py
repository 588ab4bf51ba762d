"""Report writers: a markdown table, a JSON file and a PNG plot (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kag.errors import EvaluationError, MissingDependencyError

METRIC_LABELS = {
    "ndcg@10": "nDCG@10",
    "recall@10": "R@10",
    "recall@100": "R@100",
    "mrr@10": "MRR@10",
    "map": "MAP",
}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def prepare_out_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvaluationError(f"cannot create the output folder {path}: {exc.strerror or exc}") from exc
    return path


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def retrieval_markdown(report: Mapping[str, Any]) -> str:
    """The retrieval table: one row per setup, metrics, latency, and p-values against the baseline."""
    metrics = report["metrics"]
    baseline = report["baseline"]
    lines = [
        f"# Retrieval: {report['dataset']} ({report['split']}, {report['queries']} queries)",
        "",
        "| setup | " + " | ".join(METRIC_LABELS.get(m, m) for m in metrics) + " | p50 ms | p95 ms |",
        "|---|" + "---:|" * (len(metrics) + 2),
    ]
    for row in report["setups"]:
        cells = []
        for m in metrics:
            cell = fmt(row["metrics"][m])
            p = row.get("p_values", {}).get(m)
            if p is not None and p < report["alpha"]:
                cell += "†"
            cells.append(cell)
        name = f"**{row['name']}**" if row["name"] == baseline else row["name"]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {fmt(row['latency_ms']['p50'], 1)} | "
            f"{fmt(row['latency_ms']['p95'], 1)} |"
        )
    lines += [
        "",
        f"† differs from the baseline **{baseline}** with p < {report['alpha']} "
        f"(paired {report['stat_test']} test over the {report['queries']} queries, ranx).",
        "Documents rank by their best chunk (max aggregation). Latency: one query, end to end, "
        "including rerank and the chunk-to-document mapping.",
        "",
        "| setup | description |",
        "|---|---|",
    ]
    for row in report["setups"]:
        lines.append(f"| {row['name']} | {row['description']} |")
    return "\n".join(lines) + "\n"


def answers_markdown(report: Mapping[str, Any]) -> str:
    m = report["metrics"]
    rows = [
        ("questions", report["questions"]),
        ("answerable / unanswerable", f"{report['answerable']} / {report['unanswerable']}"),
        ("exact match (all)", fmt(m["exact_match"])),
        ("token F1 (all)", fmt(m["f1"])),
        ("exact match / F1 (answerable)", f"{fmt(m['has_answer_exact_match'])} / {fmt(m['has_answer_f1'])}"),
        ("exact match / F1 (unanswerable)", f"{fmt(m['no_answer_exact_match'])} / {fmt(m['no_answer_f1'])}"),
        ("answer contains a gold answer (answerable)", fmt(m["answer_contains_gold"])),
        ("citation precision", fmt(m["citation_precision"])),
        ("citation recall", fmt(m["citation_recall"])),
        ("sentence support rate (shown sentences)", fmt(m["sentence_support_rate"])),
        ("model sentences supported as written", fmt(m["model_sentence_support_rate"])),
        ("abstention precision (unanswerable)", fmt(m["abstention"]["precision"])),
        ("abstention recall (unanswerable)", fmt(m["abstention"]["recall"])),
        ("answer rate on answerable", fmt(m["answer_rate_answerable"])),
        ("gold passage retrieved into the sources", fmt(m["gold_passage_in_sources"])),
    ]
    if m.get("citations_cover_all_gold") is not None:  # multi-document evidence (HotpotQA's two titles)
        rows += [
            ("citations cover every gold document", fmt(m["citations_cover_all_gold"])),
            ("sources hold every gold document", fmt(m.get("sources_hold_all_gold"))),
        ]
    lines = [
        f"# Answers: {report['dataset']} ({report['questions']} questions, policy {report['policy']})",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "| stage | p50 ms | p95 ms | mean ms |", "|---|---:|---:|---:|"]
    for stage, values in report["latency_ms"].items():
        lines.append(f"| {stage} | {fmt(values['p50'], 1)} | {fmt(values['p95'], 1)} | {fmt(values['mean'], 1)} |")
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("matplotlib is not installed", hint="pip install 'kag[eval]'") from exc
    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    return plt


def retrieval_plot(path: Path, report: Mapping[str, Any]) -> None:
    """Grouped bars of each metric per setup, and the p50/p95 latency per setup."""
    plt = _pyplot()
    setups: Sequence[Mapping[str, Any]] = report["setups"]
    metrics = report["metrics"]
    names = [s["name"] for s in setups]
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(names) + 6), 4.8), width_ratios=[3, 1.4])
    width = 0.8 / max(len(metrics), 1)
    for i, metric in enumerate(metrics):
        xs = [j + (i - (len(metrics) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [s["metrics"][metric] for s in setups], width, label=METRIC_LABELS.get(metric, metric))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(f"{report['dataset']} {report['split']} ({report['queries']} queries)")
    ax.legend(fontsize="small", ncols=len(metrics))
    ax.grid(axis="y", alpha=0.3)
    ys = range(len(names))
    lat.barh([y + 0.2 for y in ys], [s["latency_ms"]["p50"] for s in setups], 0.4, label="p50")
    lat.barh([y - 0.2 for y in ys], [s["latency_ms"]["p95"] for s in setups], 0.4, label="p95")
    lat.set_yticks(list(ys), names)
    lat.invert_yaxis()
    lat.set_xscale("log")
    lat.set_xlabel("ms per query (log)")
    lat.set_title("latency")
    lat.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def answers_plot(path: Path, report: Mapping[str, Any]) -> None:
    """Quality rates as bars, and per-stage latency p50/p95."""
    plt = _pyplot()
    m = report["metrics"]
    quality = {
        "EM": m["exact_match"],
        "F1": m["f1"],
        "cit. P": m["citation_precision"],
        "cit. R": m["citation_recall"],
        "support": m["sentence_support_rate"],
        "abst. P": m["abstention"]["precision"],
        "abst. R": m["abstention"]["recall"],
        "answered": m["answer_rate_answerable"],
    }
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[2, 1.2])
    labels = list(quality)
    ax.bar(labels, [v if v is not None else 0.0 for v in quality.values()], color="tab:blue")
    for x, v in enumerate(quality.values()):
        ax.text(x, (v or 0.0) + 0.02, fmt(v, 2), ha="center", fontsize="small")
    ax.set_ylim(0, 1.1)
    ax.set_title(f"{report['dataset']}: {report['questions']} questions, policy {report['policy']}")
    ax.grid(axis="y", alpha=0.3)
    stages = list(report["latency_ms"])
    ys = range(len(stages))
    lat.barh([y + 0.2 for y in ys], [report["latency_ms"][s]["p50"] for s in stages], 0.4, label="p50")
    lat.barh([y - 0.2 for y in ys], [report["latency_ms"][s]["p95"] for s in stages], 0.4, label="p95")
    lat.set_yticks(list(ys), stages)
    lat.invert_yaxis()
    lat.set_xscale("log")  # stages differ by orders of magnitude (audit: ms, generation: seconds)
    lat.set_xlabel("ms (log)")
    lat.set_title("latency per stage")
    lat.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
