"""Per-step metrics: JSONL (the record), TensorBoard, one console line, and PNG plots at the end."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    """Appends one JSON object per step to `metrics.jsonl` and mirrors it to TensorBoard."""

    def __init__(self, output_dir: str | Path, resume_from_step: int | None = None):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if resume_from_step is not None:
            self._truncate_after(resume_from_step)
        elif self.path.exists():
            self.path.unlink()
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        except ImportError:  # tensorboard is a core dependency; tolerate a trimmed install
            log.warning("tensorboard not installed: metrics go to metrics.jsonl only")

    def _truncate_after(self, step: int) -> None:
        """On resume, drop records a killed run wrote after its last checkpoint."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(key, value, clean["step"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def console_line(record: dict[str, Any]) -> str:
    parts = [f"step {record['step']}"]
    for key, fmt in CONSOLE_KEYS:
        value = record.get(key)
        if isinstance(value, (int, float)):
            parts.append(fmt.format(value))
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
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
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
