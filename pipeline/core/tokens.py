"""Token ids of prompts and responses: the chat template, the system prompt, EOS (docs/design.md).

    ids = prompt_ids(tokenizer, "Add 3 and 4.", system_prompt)     # rendered with the chat template
    response = fit_response(ids, response_ids(tokenizer, "7"), max_length=512)

A response is its text followed by EOS, so the model learns to stop and the reward model reads the
same closing token in training and in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.config import DataError

Messages = list[dict[str, str]]
"""TRL's conversational prompt: `[{"role": "system" | "user" | ..., "content": "..."}]`."""


class HasPrompt(Protocol):
    """A problem (`pipeline.data.problems.Problem`): its text, or the conversation that replaces it."""

    problem: str
    messages: Messages | None


PromptLike = HasPrompt | str | Messages
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
    if not isinstance(prompt, (str, list)):
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


def response_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a response: the text, then EOS (the model learns, and is scored, to stop)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def fit_response(prompt: list[int], response: list[int], max_length: int) -> list[int] | None:
    """`response` cut so prompt + response fit `max_length`; None when the prompt leaves no room."""
    room = max_length - len(prompt)
    return response[:room] if room > 0 else None
