"""Prompts: problems rendered with the chat template and system prompt, as token ids, in a resumable order.

    problems = filter_long_prompts(tokenizer, problems, system_prompt, max_prompt_tokens=384)
    stream = PromptStream(problems, batch_size=8, seed=0)
    ids = encode_prompts(tokenizer, stream.next_batch(), system_prompt, max_prompt_tokens=384)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.data.problems import DataError, Problem

log = logging.getLogger(__name__)


# ---- prompts ----------------------------------------------------------------------------

Messages = list[dict[str, str]]
"""TRL's conversational prompt: `[{"role": "system" | "user" | ..., "content": "..."}]`."""
PromptLike = Problem | str | Messages
"""A problem, its text (raw, or already rendered with the chat template), or a conversation."""


def render_prompt(tokenizer: Any, problem: str | Messages, system_prompt: str) -> str:
    """The prompt text of a problem or a conversation: the chat template with a generation prompt,
    else the messages' contents joined by blank lines (`system\n\nproblem\n`).

    `system_prompt` comes first unless the conversation opens with its own system message.
    """
    messages = [{"role": "user", "content": problem}] if isinstance(problem, str) else list(problem)
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n"


@dataclass(frozen=True)
class TemplateTurns:
    """The chat template's turn markers, read off a rendered probe (e.g. SmolLM2's ChatML)."""

    opening: str
    """What opens every turn, whatever the role: `<|im_start|>`."""
    end: str
    """What closes a message: `<|im_end|>\n`."""
    generation: str
    """The generation prompt, which opens the assistant's turn: `<|im_start|>assistant\n`."""


_PROBE = "rlvr-probe-7f3a"
_TURNS: dict[str, TemplateTurns] = {}


def template_turns(tokenizer: Any) -> TemplateTurns | None:
    """The turn markers of the tokenizer's chat template (cached per template); `None` without one."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    key = str(template)
    if key not in _TURNS:
        user = [{"role": "user", "content": _PROBE}]
        closed = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=False)
        opened = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        head, _, end = closed.partition(_PROBE)
        user_turn = head.rsplit(end.strip(), 1)[-1] if end.strip() else head
        _TURNS[key] = TemplateTurns(opening=user_turn.split("user")[0].strip(), end=end,
                                    generation=opened[len(closed):] if opened.startswith(closed) else "")
    return _TURNS[key]


def rendered_prompt(tokenizer: Any, text: str) -> str | None:
    """`text` ready for generation if it is already rendered with the chat template, `None` if it is raw.

    Rendered means: it ends with the generation prompt (used as is), continues an open
    assistant turn (used as is), or holds the template's turn markers and ends a turn
    (`<|im_start|>user\nAdd 3 and 4.<|im_end|>\n`: the generation prompt is appended).
    Raises `DataError` for rendered text that stops inside a turn of another role.
    """
    turns = template_turns(tokenizer)
    if turns is None:
        return None
    body, generation, end = text.rstrip(), turns.generation.strip(), turns.end.strip()
    trailing = turns.generation[len(turns.generation.rstrip()):]
    if generation and body.endswith(generation):
        return body + trailing
    if not turns.opening or turns.opening not in text:
        return None
    if generation and generation in body and end and end not in body[body.rfind(generation):]:
        return text  # the assistant's turn is open: the completion continues it
    if not end or body.endswith(end):
        return body[: len(body) - len(end)] + turns.end + turns.generation
    raise DataError(
        f"prompt {text[:60]!r}... is rendered with the chat template (it holds {turns.opening!r}) but stops "
        f"inside a turn; end the turn with {end!r} or give the raw problem text"
    )


def prompt_text(tokenizer: Any, prompt: PromptLike, system_prompt: str) -> str:
    """The text the policy sees: a conversation or raw text rendered with the template and
    `system_prompt`; text already rendered is used as is (completed by `rendered_prompt`)."""
    if isinstance(prompt, Problem):
        prompt = prompt.messages or prompt.problem
    if isinstance(prompt, str) and (text := rendered_prompt(tokenizer, prompt)) is not None:
        return text
    return render_prompt(tokenizer, prompt, system_prompt)


def prompt_ids(tokenizer: Any, prompt: PromptLike, system_prompt: str) -> list[int]:
    """Token ids of `prompt_text`: a problem, raw text or a conversation rendered, rendered text as is."""
    text = prompt_text(tokenizer, prompt, system_prompt)
    # A chat template already holds its special tokens; plain text gets the tokenizer's own (e.g. BOS).
    templated = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


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
