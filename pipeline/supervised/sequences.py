"""Response token ids for the supervised stages (SFT, reward model, DPO); prompts: `pipeline.data.prompts`.

A response is its text followed by EOS, so the model learns to stop and the reward model reads the same
closing token in training and in use.
"""

from __future__ import annotations

from typing import Any

def response_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a response: the text, then EOS (the model learns, and is scored, to stop)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def fit_response(prompt: list[int], response: list[int], max_length: int) -> list[int] | None:
    """`response` cut so prompt + response fit `max_length`; None when the prompt leaves no room."""
    room = max_length - len(prompt)
    return response[:room] if room > 0 else None
