"""Reward from a trained Bradley-Terry reward model (docs/algorithms.md §10) as a reward term.

    reward:
      terms:
        - {name: accuracy, weight: 1.0}
        - {name: reward_model, weight: 0.5, params: {path: runs/demo/reward_model}}

The model (the folder `rlvr reward-model` writes) is loaded once, on first use, and scores
completions `batch_size` at a time against the `prompt` column (rendered prompts or raw
problem texts; raw ones get the chat template and the system prompt the model was trained
with). Values are the raw scalar rewards `r(x, y)`, unbounded: weight them accordingly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pipeline.core.models import resolve_device
from pipeline.core.reward_model import META_FILE, load_reward_model, score
from rewards.messages import completion_texts
from rewards.registry import register

__all__ = ["ModelReward", "reward_model"]


class ModelReward:
    """``r(prompt, completion)`` from a saved reward model, one float per completion."""

    def __init__(self, path: str, batch_size: int = 8, device: str = "auto") -> None:
        if batch_size < 1:
            raise ValueError(f"reward_model: batch_size must be >= 1, got {batch_size}")
        self.path, self.batch_size, self.device = path, batch_size, device
        self._loaded: tuple[Any, Any, dict[str, Any]] | None = None

    def _model(self) -> tuple[Any, Any, dict[str, Any]]:
        if self._loaded is None:
            self.device = str(resolve_device(self.device))
            self._loaded = load_reward_model(self.path, device=self.device)
        return self._loaded

    def __call__(self, completions: list[str], prompt: Sequence[str] | None = None, **_: Any) -> list[float]:
        if prompt is None:
            raise ValueError("the reward_model reward needs a 'prompt' column (one prompt per completion)")
        completions = completion_texts(completions)
        rm, tokenizer, meta = self._model()
        return score(rm, tokenizer, list(prompt), list(completions), system_prompt=meta["system_prompt"],
                     max_length=meta["max_length"], batch_size=self.batch_size, device=self.device)

    def close(self) -> None:
        self._loaded = None


@register("reward_model")
def reward_model(path: str, batch_size: int = 8, device: str = "auto") -> ModelReward:
    """Reward-model reward (§10): ``path`` is the folder `rlvr reward-model` wrote."""
    if not (Path(path) / META_FILE).is_file():
        raise ValueError(f"reward_model: {path!r} is not a reward model folder (no reward_model.json); "
                         "train one with `rlvr reward-model` and pass its output folder as params.path")
    return ModelReward(path, batch_size=batch_size, device=device)
