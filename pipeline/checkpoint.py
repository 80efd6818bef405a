"""Atomic checkpoints: a run killed at any moment resumes from the last complete one.

A checkpoint is a folder `checkpoint-<step>/` holding the adapter (`save_pretrained`),
`trainer_state.pt` (optimiser, scheduler, RNG states, data position, step, extras).
It is written under a temporary name and renamed into place, then `latest` (a text
file naming it) is replaced atomically; a folder without `latest` pointing at it is
never read.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: str | Path, step: int, model, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `root/checkpoint-<step>` atomically and point `root/latest` at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    staging = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}-", dir=root))
    try:
        model.save_pretrained(staging / "adapter")
        torch.save({**state, "step": step, "rng": rng_state()}, staging / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    pointer = root / "latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    folders = sorted(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    pointer = Path(root) / "latest"
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The saved trainer state; restores the RNG states as a side effect."""
    state = torch.load(checkpoint / STATE_FILE, weights_only=False)
    set_rng_state(state["rng"])
    return state
