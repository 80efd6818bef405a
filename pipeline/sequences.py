"""Token ids for the supervised stages (SFT, reward model, DPO): prompts and responses.

A prompt is a problem rendered with the chat template and system prompt, or a prompt that is
already rendered (as the RL trainer passes them to rewards), used as is. A response is its
text followed by EOS, so the model learns to stop and the reward model reads the same
closing token in training and in use.
"""

from __future__ import annotations

from typing import Any

from pipeline.data import render_prompt


def is_rendered(tokenizer: Any, prompt: str) -> bool:
    """Does `prompt` already end with the chat template's generation prompt (a rendered prompt)?"""
    if not getattr(tokenizer, "chat_template", None):
        return False
    marker = "\x00"
    tail = render_prompt(tokenizer, marker, "").split(marker)[-1].strip()
    return bool(tail) and prompt.rstrip().endswith(tail)


def prompt_ids(tokenizer: Any, prompt: str, system_prompt: str) -> list[int]:
    """Token ids of a prompt: the problem rendered with the chat template, or used as is if rendered."""
    text = prompt if is_rendered(tokenizer, prompt) else render_prompt(tokenizer, prompt, system_prompt)
    templated = bool(getattr(tokenizer, "chat_template", None))
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def response_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a response: the text, then EOS (the model learns, and is scored, to stop)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def fit_response(prompt: list[int], response: list[int], max_length: int) -> list[int] | None:
    """`response` cut so prompt + response fit `max_length`; None when the prompt leaves no room."""
    room = max_length - len(prompt)
    return response[:room] if room > 0 else None
