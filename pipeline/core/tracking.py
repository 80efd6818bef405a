"""Per-step metrics: JSONL (the record), TensorBoard, one console line, and PNG plots at the end;
and a sample of each RL step's completions (JSONL and TensorBoard's text tab, like TRL's
`log_completions`).

    writer = MetricsWriter("runs/demo/rl")
    writer.write({"step": 3, "reward/mean": 0.41, "eval/accuracy": 0.5, "eval/accuracy_stderr": 0.05})
    writer.log_completions(3, groups, advantages, tokenizer, count=4)   # rl/completions.jsonl
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CONSOLE_KEYS = [
    ("reward/mean", "reward {:.3f}"),
    ("accuracy/mean", "acc {:.3f}"),
    ("eval/accuracy", "eval {:.3f}"),
    ("response_length/mean", "len {:.0f}"),
    ("kl/mean", "kl {:.4f}"),
    ("entropy/mean", "ent {:.3f}"),
    ("clip_frac/low", "clip- {:.3f}"),
    ("clip_frac/high", "clip+ {:.3f}"),
    ("mismatch/mean_abs", "mis {:.3f}"),
    ("perf/tokens_per_s", "{:.0f} tok/s"),
    ("time/step", "{:.1f}s"),
]

STDERR_SUFFIX = "_stderr"
"""A record's `<key>_stderr` is the standard error of `<key>` (shown as `±` and as an error band)."""

COMPLETIONS_FILE = "completions.jsonl"

PLOT_KEYS = [
    "reward/mean", "eval/accuracy", "accuracy/mean", "response_length/mean", "truncation_rate",
    "entropy/mean", "kl/mean", "clip_frac/low", "clip_frac/high", "mismatch/mean_abs",
    "sampling/gen_batches", "perf/tokens_per_s",
]


@contextmanager
def timed(record: dict[str, Any], phase: str) -> Iterator[None]:
    """Add the seconds the block takes to `record["time/<phase>"]` (phases entered twice add up)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        key = f"time/{phase}"
        record[key] = record.get(key, 0.0) + time.perf_counter() - start


class MetricsWriter:
    """Appends one JSON object per step to `metrics.jsonl` and mirrors it to TensorBoard; sampled
    completions go to `completions.jsonl` (`log_completions`). A fresh writer starts both files
    anew; one resuming from step `s` keeps their records of steps <= s."""

    def __init__(self, output_dir: str | Path, resume_from_step: int | None = None):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.completions_path = self.dir / COMPLETIONS_FILE
        for path in (self.path, self.completions_path):
            if resume_from_step is not None:
                _truncate_after(path, resume_from_step)
            elif path.exists():
                path.unlink()
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        except ImportError:  # tensorboard is a core dependency; tolerate a trimmed install
            log.warning("tensorboard not installed: metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(key, value, clean["step"])
            self._tb.flush()

    def log_completions(self, step: int, groups: Sequence[Any], advantages: torch.Tensor, tokenizer: Any,
                        count: int) -> list[dict[str, Any]]:
        """Write `count` of the step's completions (0 = none) as rows of `completions.jsonl` and as
        Markdown under TensorBoard's text tab `completions`; returns the rows (`completion_rows`)."""
        if count <= 0 or not groups:
            return []
        rows = completion_rows(step, groups, advantages, tokenizer, count)
        with self.completions_path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if self._tb is not None:
            self._tb.add_text("completions", completions_markdown(rows), step)
            self._tb.flush()
        return rows

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _truncate_after(path: Path, step: int) -> None:
    """On resume, drop the records a killed run wrote after its last checkpoint."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def completion_rows(step: int, groups: Sequence[Any], advantages: torch.Tensor, tokenizer: Any,
                    count: int) -> list[dict[str, Any]]:
    """`count` completions of one RL step, drawn at random (seeded by the step), in batch order.

    `groups`: the step's groups as the trainer keeps them (`prompt_ids`, `completions`,
    `rewards`, `components`: reward name -> one value per completion), in the order of the
    batch's rows; `advantages`: the batch's advantages, [B] per sequence or [B, T] per token
    (GAE; a row then reports the mean over its completion's tokens). Each row: step, group,
    sample (index within the group), prompt (decoded, chat template included), completion,
    reward (the weighted total), rewards (each term), advantage, length (tokens), finish_reason.
    ValueError if `advantages` has another number of rows than the groups hold completions.
    """
    rows = [(g, gi, j) for gi, g in enumerate(groups) for j in range(len(g.completions))]
    if advantages.shape[0] != len(rows):
        raise ValueError(f"{advantages.shape[0]} advantages for {len(rows)} completions")
    advantages = advantages.detach().float().cpu()
    picked = sorted(random.Random(step).sample(range(len(rows)), min(count, len(rows))))
    out = []
    for index in picked:
        group, gi, j = rows[index]
        completion = group.completions[j]
        advantage = advantages[index]
        if advantage.dim():
            advantage = advantage[: max(1, len(completion.token_ids))].mean()
        out.append({
            "step": step, "group": gi, "sample": j,
            "prompt": tokenizer.decode(group.prompt_ids, skip_special_tokens=False),
            "completion": completion.text, "reward": float(group.rewards[j]),
            "rewards": {name: None if values[j] is None else float(values[j])  # None: the term did not apply
                        for name, values in group.components.items()},
            "advantage": float(advantage), "length": len(completion.token_ids),
            "finish_reason": completion.finish_reason,
        })
    return out


def completions_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """`completion_rows` as Markdown for TensorBoard's text tab: a header line per completion
    (reward, its terms, advantage, length), then prompt and completion as code blocks."""

    def block(text: str) -> str:
        return "\n".join("    " + line for line in (text or " ").splitlines())

    parts = []
    for row in rows:
        terms = ", ".join(f"{name} {'n/a' if value is None else format(value, '.3g')}"
                          for name, value in row["rewards"].items())
        parts.append(
            f"**step {row['step']}, group {row['group']}, sample {row['sample']}**: reward {row['reward']:.3f}"
            f" ({terms}), advantage {row['advantage']:+.3f}, {row['length']} tokens ({row['finish_reason']})"
            f"\n\nprompt:\n\n{block(row['prompt'])}\n\ncompletion:\n\n{block(row['completion'])}")
    return "\n\n---\n\n".join(parts)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def console_line(record: dict[str, Any]) -> str:
    """`step 3 | reward 0.410 | eval 0.500 ± 0.050 | ...`: the CONSOLE_KEYS present, with their SEs."""
    parts = [f"step {record['step']}"]
    for key, fmt in CONSOLE_KEYS:
        value = record.get(key)
        if isinstance(value, (int, float)):
            error = record.get(key + STDERR_SUFFIX)
            parts.append(fmt.format(value) + (f" ± {error:.3f}" if isinstance(error, (int, float)) else ""))
    return " | ".join(parts)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per logged metric against the step, plus an overview grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    keys = [k for k in PLOT_KEYS if any(isinstance(r.get(k), (int, float)) for r in records)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not keys:
        return []
    cols = 3
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["step"], r[key], r.get(key + STDERR_SUFFIX))
                  for r in records if isinstance(r.get(key), (int, float))]
        xs, ys, errors = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
        if all(isinstance(e, (int, float)) for e in errors):  # a band of one standard error
            ax.fill_between(xs, [y - e for y, e in zip(ys, errors)], [y + e for y, e in zip(ys, errors)], alpha=0.25)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    path = out / "metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
