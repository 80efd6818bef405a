"""Prompts: problems as token ids (rendered by `pipeline.core.tokens.prompt_ids`), length-checked, in a resumable order.

    problems = filter_long_prompts(tokenizer, problems, system_prompt, max_prompt_tokens=384)
    stream = PromptStream(problems, batch_size=8, seed=0)
    ids = encode_prompts(tokenizer, stream.next_batch(), system_prompt, max_prompt_tokens=384)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from pipeline.config import DataError
from pipeline.core.tokens import PromptLike, prompt_ids
from pipeline.data.problems import Problem

log = logging.getLogger(__name__)


# ---- prompts ----------------------------------------------------------------------------


def encode_prompts(
    tokenizer: Any, problems: Sequence[PromptLike], system_prompt: str, max_prompt_tokens: int
) -> list[list[int]]:
    """Token ids of each rendered prompt; a prompt over the limit is an error.

    Drop over-long problems once at load time with `filter_long_prompts`.
    """
    encoded = []
    for index, problem in enumerate(problems):
        ids = prompt_ids(tokenizer, problem, system_prompt)
        if len(ids) > max_prompt_tokens:
            raise DataError(
                f"prompt {index} has {len(ids)} tokens, more than data.max_prompt_tokens={max_prompt_tokens}; "
                f"raise the limit or drop long problems with filter_long_prompts"
            )
        encoded.append(ids)
    return encoded


def filter_long_prompts(
    tokenizer: Any, problems: Sequence[Problem], system_prompt: str, max_prompt_tokens: int
) -> list[Problem]:
    """The problems whose rendered prompt fits `max_prompt_tokens`; logs how many were skipped."""
    kept = [p for p in problems if len(prompt_ids(tokenizer, p, system_prompt)) <= max_prompt_tokens]
    if not kept:
        raise DataError(f"every prompt is longer than data.max_prompt_tokens={max_prompt_tokens}")
    if len(kept) < len(problems):
        log.warning(
            "skipped %d of %d problems whose prompt is longer than data.max_prompt_tokens=%d",
            len(problems) - len(kept), len(problems), max_prompt_tokens,
        )
    return kept


# ---- prompt order ----------------------------------------------------------------------


class PromptStream:
    """Endless batches of problems; each epoch is a new permutation seeded by (seed, epoch).

    `state_dict()`/`load_state_dict()` carry (epoch, position), so a resumed run takes
    exactly the batches an uninterrupted one would. A batch may span two epochs.
    """

    def __init__(self, problems: Sequence[Problem], batch_size: int, seed: int = 0):
        if not problems:
            raise DataError("PromptStream needs at least one problem")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.problems = list(problems)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[Problem]:
        batch: list[Problem] = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(batch), len(self._order) - self.position)
            batch.extend(self.problems[i] for i in self._order[self.position : self.position + take])
            self.position += take
        return batch

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch, "position": self.position, "seed": self.seed, "num_problems": len(self.problems),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_problems"] != len(self.problems) or state["seed"] != self.seed:
            raise DataError(
                f"cannot resume the prompt order: saved for {state['num_problems']} problems with seed "
                f"{state['seed']}, now {len(self.problems)} problems with seed {self.seed}"
            )
        if not 0 <= state["position"] <= len(self.problems):
            raise DataError(f"cannot resume the prompt order: position {state['position']} is out of range")
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)
