"""AIME-style evaluation of a rollout engine on held-out problems (docs/algorithms.md §11).

    report = evaluate_problems(engine, tokenizer, problems, system_prompt=..., n=4,
                               temperature=0.6, top_p=0.95, max_tokens=256, k_list=(1, 4))
    report.summary["avg@4"], report.to_json("eval/report.json"), print(report.to_markdown())

Used by `rlvr eval` and by the RL trainer's periodic held-out evaluation, so it knows
nothing about stages, configs or output folders.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.checkpoint import write_json_atomic
from pipeline.data.problems import Problem, load_problems
from pipeline.data.prompts import encode_prompts
from pipeline.eval.pass_at_k import Equivalence, avg_at_n, maj_at_k, paired_difference, pass_at_k, standard_error
from pipeline.rollout.base import SamplingSettings
from rewards.math import answers_equivalent, extract_answer, verify_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalDataset:
    """Where a named benchmark lives and which `pipeline.data.problems` column preset reads it."""

    spec: str
    split: str
    preset: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)


EVAL_DATASETS: dict[str, EvalDataset] = {
    "rlvr-test": EvalDataset("datasets/test.jsonl", "test"),
    "aime24": EvalDataset("HuggingFaceH4/aime_2024", "train", "aime"),
    "aime25": EvalDataset("math-ai/aime25", "test", "aime"),
    "math500": EvalDataset("HuggingFaceH4/MATH-500", "test", "math", {"source": "subject"}),
    "gsm8k": EvalDataset("openai/gsm8k:main", "test", "gsm8k"),
}
"""`eval.dataset` names; anything else is a path or hub dataset read with `eval.split`."""


def load_eval_problems(dataset: str, *, split: str = "test", levels: Sequence[int] | None = None,
                       limit: int | None = None, seed: int = 0) -> list[Problem]:
    """The problems of a preset name (EVAL_DATASETS), a local file or a hub dataset (of `levels` if given)."""
    preset = EVAL_DATASETS.get(dataset)
    if preset is None:
        return load_problems(dataset, split=split, levels=levels, limit=limit, seed=seed)
    return load_problems(preset.spec, split=preset.split, preset=preset.preset, columns=preset.columns,
                         levels=levels, limit=limit, seed=seed)


STDERR = "stderr"
"""Summary key of the standard errors over problems: `summary["stderr"]["avg@4"]` (lighteval's
`acc_stderr`), with `by_level` and `by_source` dicts inside for the breakdowns."""

PAIRED = "paired_difference"
"""Summary key `--compare` adds: `{"reference": label, "problems": m, "metrics": {metric: {"diff",
"stderr", "low", "high"}}}`, this checkpoint minus the reference on the same problems (95% interval)."""


@dataclass
class EvalReport:
    """`summary`: flat metrics plus `by_level`/`by_source`, and `stderr`: each accuracy metric's
    standard error over problems (breakdowns included); `samples`: one dict per completion;
    `problems`: one dict per problem (text, gold, level, source, correct count, and `scores`:
    the problem's value of each metric)."""

    summary: dict[str, Any]
    samples: list[dict[str, Any]]
    problems: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, path: str | Path) -> None:
        write_json_atomic(Path(path), asdict(self), indent=1)

    @classmethod
    def from_json(cls, path: str | Path) -> EvalReport:
        return cls(**json.loads(Path(path).read_text()))

    def to_markdown(self) -> str:
        """The summary as Markdown tables: metrics with their standard errors, then accuracy by level and by source."""
        n, summary, errors = self.summary["n"], self.summary, self.summary.get(STDERR, {})
        rows = [(key, _fmt(value), _fmt(errors.get(key, ""))) for key, value in summary.items()
                if not isinstance(value, dict)]
        parts = [_table(["metric", "value", "stderr"], rows)]
        for key, title in (("by_level", "level"), ("by_source", "source")):
            if summary.get(key):
                errors = summary.get(STDERR, {}).get(key, {})
                parts.append(_table([title, f"avg@{n}", "stderr"],
                                    [(k, _fmt(v), _fmt(errors.get(k, ""))) for k, v in summary[key].items()]))
        return "\n\n".join(parts) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_with_error(value: Any, error: Any) -> str:
    """`0.583 ± 0.142` when a standard error is known, else the value alone."""
    return f"{_fmt(value)} ± {error:.3f}" if isinstance(error, float) else _fmt(value)


def format_difference(d: dict[str, float]) -> str:
    """A paired difference as `+0.107 [+0.043, +0.171]` (the 95% interval in brackets; none over one problem)."""
    interval = f" [{d['low']:+.3f}, {d['high']:+.3f}]" if d.get("low") is not None else ""
    return f"{d['diff']:+.3f}{interval}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def evaluate_problems(
    engine: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    system_prompt: str,
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    max_prompt_tokens: int = 384,
    k_list: Sequence[int] = (1,),
    stop: Sequence[str] = (),
    extract: str = "boxed",
    timeout: float = 5.0,
    workers: int = 2,
) -> EvalReport:
    """Sample `n` completions per problem (greedy when n == 1), score them, summarise (§11).

    Answers are extracted as the accuracy reward does (`extract`: boxed, answer_tag, last_number)
    and verified in worker processes (`timeout` seconds each). `k_list` values above `n` are
    skipped; pass@n and maj@n are always reported. `temperature == 0` decodes greedily: n
    identical samples would only inflate pass@k / maj@k claims, so it decodes once, reports n=1
    and logs a warning.
    """
    if temperature == 0 and n > 1:
        log.warning("eval: temperature 0 decodes greedily, so the n=%d samples per problem would be "
                    "identical; decoding once and reporting n=1", n)
        n = 1
    greedy = n == 1
    sampling = SamplingSettings(
        n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
        top_k=-1, max_tokens=max_tokens, stop=list(stop),
    )
    prompts = encode_prompts(tokenizer, problems, system_prompt, max_prompt_tokens)
    groups = engine.generate(prompts, sampling)
    samples = []
    for index, group in enumerate(groups):
        if len(group) != n:
            raise RuntimeError(f"the engine returned {len(group)} completions for problem {index}, expected {n}")
        for completion in group:
            samples.append({
                "problem": index, "text": completion.text, "answer": extract_answer(completion.text, extract),
                "length": len(completion.token_ids), "finish_reason": completion.finish_reason,
                "truncated": bool(completion.truncated),
            })
    pairs = [(sample["answer"] or "", problems[sample["problem"]].answer) for sample in samples]
    for sample, verdict in zip(samples, verify_batch(pairs, timeout=timeout, workers=workers)):
        sample["correct"] = verdict  # no answer ("") is never correct
    settings = {"n": n, "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": max_tokens}

    # the reward's equivalence, on the same worker pool as the verdicts above
    equivalent = functools.lru_cache(maxsize=None)(functools.partial(answers_equivalent, timeout=timeout,
                                                                     workers=workers))
    return summarize(problems, samples, settings, k_list, equivalent)


def summarize(
    problems: Sequence[Problem],
    samples: list[dict[str, Any]],
    settings: dict[str, Any],
    k_list: Sequence[int],
    equivalent: Equivalence,
) -> EvalReport:
    """The report from scored samples (each with `problem`, `answer`, `correct`, `length`, `truncated`);
    `equivalent` clusters answers for maj@k."""
    n = settings["n"]
    skipped = sorted(k for k in set(k_list) if k > n)
    if skipped:
        log.warning("eval: k=%s larger than n=%d samples per problem; skipped", skipped, n)
    ks = sorted({k for k in k_list if 1 <= k <= n} | {n})
    per_problem: list[list[dict[str, Any]]] = [[] for _ in problems]
    for sample in samples:
        per_problem[sample["problem"]].append(sample)
    counts = [sum(s["correct"] for s in group) for group in per_problem]

    # Per-problem value of every metric: the mean is the metric, the SE is over problems (§11).
    scores: dict[str, list[float]] = {f"avg@{n}": [c / n for c in counts]}
    for k in ks:
        scores[f"pass@{k}"] = [pass_at_k(n, c, k) for c in counts]
    for k in ks:
        scores[f"maj@{k}"] = [float(maj_at_k([s["answer"] for s in group], p.answer, k, equivalent))
                              for p, group in zip(problems, per_problem)]
    summary: dict[str, Any] = {"num_problems": len(problems), **settings}
    summary["accuracy"] = summary[f"avg@{n}"] = avg_at_n(counts, n)
    errors = {"accuracy": _stderr(scores[f"avg@{n}"])}
    for name, values in scores.items():
        summary.setdefault(name, sum(values) / len(values))
        errors[name] = _stderr(values)
    summary["mean_length"] = sum(s["length"] for s in samples) / len(samples)
    summary["truncation_rate"] = sum(s["truncated"] for s in samples) / len(samples)
    summary["no_answer_rate"] = sum(s["answer"] is None for s in samples) / len(samples)
    for key, attribute in (("by_level", "level"), ("by_source", "source")):
        summary[key], errors[key] = _breakdown([str(getattr(p, attribute)) for p in problems], counts, n)
    summary[STDERR] = errors
    rows = [
        {"index": i, "problem": p.problem, "gold": p.answer, "level": p.level, "source": p.source, "correct": c,
         "scores": {name: values[i] for name, values in scores.items()}}
        for i, (p, c) in enumerate(zip(problems, counts))
    ]
    return EvalReport(summary, samples, rows)


def _finite(value: float) -> float | None:
    """None for NaN (an SE over fewer than two problems), so reports stay valid JSON."""
    return None if math.isnan(value) else value


def _stderr(values: Sequence[float]) -> float | None:
    return _finite(standard_error(values))


def _breakdown(keys: Sequence[str], counts: Sequence[int], n: int) -> tuple[dict[str, float], dict[str, float | None]]:
    """avg@n and its SE over problems per key (level or source), keys sorted (numerically when they are numbers)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for key, count in zip(keys, counts):
        groups[key].append(count)
    order = sorted(groups, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    return ({key: avg_at_n(groups[key], n) for key in order},
            {key: _stderr([c / n for c in groups[key]]) for key in order})


def paired_differences(reports: dict[str, EvalReport], reference: str) -> dict[str, dict[str, Any]]:
    """Each report's difference from `reference`'s, paired over the same problems (§11).

    Returns label -> the `PAIRED` summary entry (every label but the reference): for each metric
    both reports hold per problem (avg@n, pass@k, maj@k), the mean per-problem difference, its
    standard error and 95% interval (`pipeline.eval.pass_at_k.paired_difference`). ValueError if the
    reports were not made on the same problems in the same order.
    """
    base = reports[reference].problems
    out: dict[str, dict[str, Any]] = {}
    for label, report in reports.items():
        if label == reference:
            continue
        if [(p["problem"], p["gold"]) for p in report.problems] != [(p["problem"], p["gold"]) for p in base]:
            raise ValueError(f"{label!r} and {reference!r} were evaluated on different problems; cannot pair them")
        metrics = {}
        for name in base[0]["scores"] if base else []:
            if name in report.problems[0]["scores"]:
                d = paired_difference([p["scores"][name] for p in base], [p["scores"][name] for p in report.problems])
                metrics[name] = {"diff": d.mean, **{k: _finite(v) for k, v in
                                                    (("stderr", d.stderr), ("low", d.low), ("high", d.high))}}
        out[label] = {"reference": reference, "problems": len(base), "metrics": metrics}
    return out


def compare_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """Side-by-side table: rows = metrics (with per-level/per-source rows), columns = checkpoints;
    under each metric with a standard error, a `<metric> stderr` row. Then, when the summaries carry
    `PAIRED` entries, each checkpoint's difference from the reference with its paired 95% interval."""
    labels = list(summaries)
    rows: dict[str, list[str]] = {}
    for column, summary in enumerate(summaries.values()):
        errors = summary.get(STDERR, {})
        flat = {k: (v, errors.get(k)) for k, v in summary.items() if not isinstance(v, dict)}
        for group, title in (("by_level", "level"), ("by_source", "source")):
            errors = summary.get(STDERR, {}).get(group, {})
            flat.update({f"{title} {k}": (v, errors.get(k)) for k, v in summary.get(group, {}).items()})
        for key, (value, error) in flat.items():
            rows.setdefault(key, [""] * len(labels))[column] = _fmt(value)
            if error is not None:
                rows.setdefault(f"{key} stderr", [""] * len(labels))[column] = _fmt(error)
    parts = [_table(["metric", *labels], [(key, *cells) for key, cells in rows.items()])]
    paired = {label: s[PAIRED] for label, s in summaries.items() if PAIRED in s}
    if paired:
        first = next(iter(paired.values()))
        names = list(dict.fromkeys(name for entry in paired.values() for name in entry["metrics"]))
        cells = [(name, *(format_difference(e["metrics"][name]) if name in e["metrics"] else "" for e in paired.values()))
                 for name in names]
        parts.append(f"Difference from {first['reference']}, paired over the same {first['problems']} problems "
                     f"(mean difference [95% interval]):\n\n" + _table(["metric", *paired], cells))
    return "\n\n".join(parts) + "\n"


def plot_compare(summaries: dict[str, dict[str, Any]], path: str | Path) -> None:
    """Grouped bars of avg@n and the largest-k maj@k per checkpoint (error bars: one standard error), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summaries)
    metrics = []
    for summary in summaries.values():
        n = summary["n"]
        metrics += [m for m in (f"avg@{n}", f"maj@{n}") if m not in metrics]
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(labels)), 3.5))
    for j, metric in enumerate(metrics):
        values = [s.get(metric, 0.0) for s in summaries.values()]
        errors = [s.get(STDERR, {}).get(metric) or 0.0 for s in summaries.values()]
        bars = ax.bar([i + (j - (len(metrics) - 1) / 2) * width for i in range(len(labels))], values, width,
                      yerr=errors, capsize=3, label=metric)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
