"""The optimisation loop SFT, the reward model and DPO share (docs/algorithms.md §4, §10).

Each stage supplies a `UnitLoss`: a function of a micro-batch of items returning the *sum* of
its per-unit losses (units are response tokens for SFT, pairs for the reward model and DPO)
and sums of any statistics, plus `count(item)`, the units an item holds. The loop normalises
by the units of the whole optimiser step (§4: with gradient accumulation the micro-batch
losses then add up to the full batch's mean), steps AdamW with clipping and the schedule,
shows a progress bar and writes one line and one metrics.jsonl record per step.

    loss = UnitLoss(fn=lambda items: (loss_sum, {"correct": n}), count=lambda item: 1)
    history = fit(model, train_items, loss, config.sft, device=device, batch_size=8, ...)
    before = evaluate(model, eval_items, loss, micro_batch_size=8, device=device)

Around the loop, what the three stages share: `start_stage` (seeds, device, model folder,
tokenizer) and `finish_stage`, which writes `metrics.json` last
and atomically: the marker that a stage finished, so a chain runner can skip it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from pipeline.config import Config, OptimConfig, save_config
from pipeline.core.checkpoint import write_json_atomic
from pipeline.core.models import load_tokenizer, prepare_model, resolve_device
from pipeline.core.optim import autocast, build_optimizer, build_scheduler, clip_and_step, eval_mode
from pipeline.core.tracking import MetricsWriter

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class UnitLoss:
    """`fn(items) -> (sum of unit losses, {stat: sum over units})`; `count(item)` = its units."""

    fn: Callable[[list[Any]], tuple[Tensor, dict[str, float]]]
    count: Callable[[Any], int]


METRICS_FILE = "metrics.json"


@dataclass
class StageSetup:
    device: torch.device
    model_path: Path
    tokenizer: Any


def start_stage(config: Config, out: Path) -> StageSetup:
    """Seed everything, save the config; the model folder and tokenizer."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    model_path = prepare_model(config.model.name, config.model.cache_dir)
    return StageSetup(resolve_device(config.device), model_path, load_tokenizer(model_path))


def finish_stage(out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Write `out/metrics.json` atomically, last: the stage's finished marker."""
    write_json_atomic(out / METRICS_FILE, metrics)
    return metrics


def total_steps(num_items: int, batch_size: int, epochs: float) -> int:
    """Optimiser steps for `epochs` passes over `num_items` (at least one)."""
    return max(1, math.ceil(epochs * num_items / batch_size))


def step_batches(items: Sequence[T], batch_size: int, steps: int, seed: int) -> Iterator[list[T]]:
    """`steps` batches of `batch_size` items; each epoch a new seeded permutation."""
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        batch = []
        while len(batch) < min(batch_size, len(items)):
            if not order:
                order = list(range(len(items)))
                rng.shuffle(order)
            batch.append(items[order.pop()])
        yield batch


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive lists of `size` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _accumulate(model: torch.nn.Module, items: list[Any], loss: UnitLoss, micro_batch_size: int,
                device: torch.device, bf16: bool | str, backward: bool) -> dict[str, float]:
    """Mean loss and statistics per unit over `items`; with `backward`, gradients of that mean."""
    units = sum(loss.count(item) for item in items)
    if units == 0:
        raise ValueError("a batch without any loss units (e.g. responses all truncated away)")
    totals: dict[str, float] = {"loss": 0.0}
    for micro in chunks(items, micro_batch_size):
        with autocast(device, bf16, model):
            loss_sum, stats = loss.fn(micro)
        if backward:
            (loss_sum / units).backward()
        totals["loss"] += float(loss_sum.detach())
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return {key: value / units for key, value in totals.items()}


def evaluate(model: torch.nn.Module, items: Sequence[Any], loss: UnitLoss, *, micro_batch_size: int,
             device: torch.device, bf16: bool | str = False) -> dict[str, float]:
    """Mean loss and statistics per unit over `items`, without gradients."""
    with eval_mode(model):
        return _accumulate(model, list(items), loss, micro_batch_size, device, bf16, backward=False)


def fit(model: torch.nn.Module, items: Sequence[Any], loss: UnitLoss, config: OptimConfig, *,
        device: torch.device, batch_size: int, micro_batch_size: int, epochs: float, seed: int = 0,
        desc: str = "train", metrics: MetricsWriter | None = None) -> list[dict[str, Any]]:
    """Train `model` on `items` for `epochs`; returns one record per optimiser step."""
    steps = total_steps(len(items), batch_size, epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, config)
    scheduler = build_scheduler(optimizer, config, steps)
    model.train()
    history = []
    bar = tqdm(total=steps, desc=desc, dynamic_ncols=True)
    for step, batch in enumerate(step_batches(items, batch_size, steps, seed), 1):
        start = time.perf_counter()
        record: dict[str, Any] = {"step": step, "lr": scheduler.get_last_lr()[0]}
        record.update(_accumulate(model, batch, loss, micro_batch_size, device, config.bf16_autocast,
                                  backward=True))
        record["grad_norm"] = clip_and_step(params, optimizer, scheduler, config.max_grad_norm)
        record["time/step"] = time.perf_counter() - start
        history.append(record)
        if metrics is not None:
            metrics.write(record)
        bar.update(1)
        bar.write(_line(desc, steps, record))
    bar.close()
    return history


def _line(desc: str, steps: int, record: dict[str, Any]) -> str:
    parts = [f"{desc} step {record['step']}/{steps}"]
    parts += [f"{k} {v:.4g}" for k, v in record.items() if k not in ("step", "time/step")]
    parts.append(f"{record['time/step']:.1f}s")
    return " | ".join(parts)


def train_and_measure(model: torch.nn.Module, items: Sequence[Any], loss: UnitLoss, config: OptimConfig, *,
                      measure: Callable[[], dict[str, float]], out: Path, device: torch.device, batch_size: int,
                      micro_batch_size: int, epochs: float, seed: int, desc: str) -> dict[str, Any]:
    """`measure()`, `fit` (per-step records to `out/metrics.jsonl`), `measure()` again.

    Returns `{<key>_before, <key>_after}` for every measured key, plus `steps`. An earlier run's
    finished marker `out/metrics.json` is withdrawn here, when results start to be written (data and
    model loaded and checked), never before.
    """
    (out / METRICS_FILE).unlink(missing_ok=True)
    before = measure()
    log.info("%s before: %s", desc, _fmt(before))
    writer = MetricsWriter(out)
    try:
        history = fit(model, items, loss, config, device=device, batch_size=batch_size,
                      micro_batch_size=micro_batch_size, epochs=epochs, seed=seed, desc=desc, metrics=writer)
    finally:
        writer.close()
    after = measure()
    log.info("%s after: %s", desc, _fmt(after))
    return {**{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()},
            "steps": len(history)}


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items())
