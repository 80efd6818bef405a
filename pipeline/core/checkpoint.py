"""Atomic checkpoints: a run killed at any moment resumes from the last complete one.

A checkpoint is a folder `checkpoint-<step>/` holding the weights (`adapter/`, peft's
`save_pretrained`, with the tokenizer), `trainer_state.pt` (optimiser, scheduler, data
position, step, extras; no RNG state: each step reseeds from (seed, step)) and `run_id`, the run that wrote it. It is written complete under
a temporary name and renamed into place, then `latest` (a text file naming it) is replaced
atomically; a folder without `latest` pointing at it is never read.

Pruning keeps the `keep` newest checkpoints *of the run being saved* and never touches another
run's folders, so re-training into a folder that still holds an earlier run's checkpoints loses
nothing. After the last step `final/adapter/` (`final/model/` after full fine-tuning) is the
stable name of the trained weights (docs/design.md).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.core.models import save_weights, weights_name
from pipeline.core.staging import staging_folder

STATE_FILE = "trainer_state.pt"
RUN_FILE = "run_id"
FINAL = "final"


def new_run_id() -> str:
    """A fresh identifier for a training run (its checkpoints carry it)."""
    return uuid.uuid4().hex


def checkpoint_run(checkpoint: Path) -> str | None:
    """The run that wrote `checkpoint` (None for a folder without a `run_id` file)."""
    path = Path(checkpoint) / RUN_FILE
    return path.read_text().strip() if path.is_file() else None


def _step(folder: Path) -> int | None:
    _, _, number = folder.name.partition("-")
    return int(number) if number.isdigit() else None


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `path` under a temporary name beside it, then rename it into place: readers see the old
    file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json_atomic(path: Path, data: Any, indent: int = 2) -> Path:
    """`data` as JSON (non-JSON values as `str`), written atomically (`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str))


def write_folder_atomic(target: Path, fill: Callable[[Path], None]) -> Path:
    """Build `target` complete in a staging folder beside it (`fill(staging)`), then swap it in."""
    staging = staging_folder(target)
    old = target.parent / f".{target.name}-replaced-{uuid.uuid4().hex[:8]}"
    try:
        fill(staging)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_checkpoint(root: str | Path, step: int, model, state: dict[str, Any], keep: int | None = 2,
                    run_id: str | None = None, tokenizer=None) -> Path:
    """Write `root/checkpoint-<step>` atomically, point `root/latest` at it, prune this run's old ones.

    `model.save_pretrained` and `tokenizer.save_pretrained` (if given) write `adapter/` inside the
    staging folder, before the rename. `run_id`: the run this checkpoint belongs to; None
    continues the run `latest` names when `step` comes after its step, else starts a new run
    (a fresh run counts its steps from the start again). `keep`: how many of this run's
    checkpoints survive (the newest; None keeps all). Returns the checkpoint folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if run_id is None:
        previous = latest_checkpoint(root)
        following = previous is not None and (_step(previous) or 0) < step
        run_id = (checkpoint_run(previous) if following else None) or new_run_id()

    def fill(staging: Path) -> None:
        model.save_pretrained(staging / "adapter")
        if tokenizer is not None:
            tokenizer.save_pretrained(staging / "adapter")
        torch.save({**state, "step": step}, staging / STATE_FILE)
        (staging / RUN_FILE).write_text(run_id)

    final = write_folder_atomic(root / f"checkpoint-{step}", fill)
    write_text_atomic(root / "latest", final.name)
    if keep is not None:
        _prune(root, run_id, keep, final)
    return final


def _prune(root: Path, run_id: str, keep: int, newest: Path) -> None:
    """Delete all but the `keep` highest-step checkpoints of `run_id`; `newest` always stays."""
    mine = [p for p in root.glob("checkpoint-*")
            if p.is_dir() and _step(p) is not None and p != newest and checkpoint_run(p) == run_id]
    mine.sort(key=_step)
    for old in mine[: max(len(mine) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)


def save_final(root: str | Path, model, tokenizer) -> Path:
    """Write `root/final/adapter/` (a peft model) or `root/final/model/` (full fine-tuning) atomically,
    weights and tokenizer together. Returns the weights folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return write_folder_atomic(root / FINAL, lambda staging: save_weights(model, staging, tokenizer)) / weights_name(model)


def latest_checkpoint(root: str | Path) -> Path | None:
    pointer = Path(root) / "latest"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The saved trainer state. No RNG state: the trainer reseeds every step from (seed, step)."""
    return torch.load(checkpoint / STATE_FILE, weights_only=False)
