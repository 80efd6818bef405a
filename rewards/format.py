"""Format reward: does the completion have the expected structure? (docs/algorithms.md §7, format).

Full credit (1.0) needs all of:

* default: some reasoning text, then exactly one complete final answer
  (``\\boxed{...}``, or ``<answer>...</answer>`` with ``answer="answer_tag"``)
  followed by at most ``max_tail_chars`` characters;
* ``think_tags=True``: ``<think>`` non-empty reasoning ``</think>`` (one pair, at
  the start; with ``think_in_prompt=True`` the opening tag belongs to the prompt
  and must not be repeated), then the answer part, which must hold exactly one
  final answer near its end (boxes inside the reasoning are allowed).

Scoring with ``partial=False``: 1.0 or 0.0. With ``partial=True``:
1.0 as above; 0.5 if a complete final answer exists but a rule is broken
(several answers, no reasoning, too much text after it, bad think tags);
0.25 (think mode only) for a well-formed think block without a final answer;
0.0 when there is no complete final answer at all.
"""

from __future__ import annotations

from typing import Any, Literal

from rewards.extract import as_text, count_boxes, last_box
from rewards.messages import completion_texts
from rewards.registry import RewardFn, register

__all__ = ["format_score", "format_reward"]

AnswerStyle = Literal["boxed", "answer_tag"]


def _final_answer(text: str, answer: AnswerStyle) -> tuple[int, int, int] | None:
    """``(number of answers, start, end)`` of the last complete, non-empty answer in ``text``."""
    if answer == "boxed":
        box = last_box(text)
        return (count_boxes(text), box[1], box[2]) if box and box[0].strip() else None
    close = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, max(close, 0))
    if close < 0 or start < 0 or not text[start + len("<answer>") : close].strip():
        return None
    return text.count("<answer>"), start, close + len("</answer>")


def _split_think(text: str, think_in_prompt: bool) -> tuple[str, str] | None:
    """``(reasoning, rest)`` for ``<think>reasoning</think>rest``; ``None`` if malformed or empty."""
    body = text.lstrip()
    if not think_in_prompt:
        if not body.startswith("<think>"):
            return None
        body = body[len("<think>") :]
    if "<think>" in body or body.count("</think>") != 1:
        return None
    reasoning, rest = body.split("</think>")
    return (reasoning, rest) if reasoning.strip() else None


def format_score(text: str, think_tags: bool = False, answer: AnswerStyle = "boxed", partial: bool = False,
                 max_tail_chars: int = 200, think_in_prompt: bool = False) -> float:
    """Format score of one completion (scheme in the module docstring)."""
    text = as_text(text)
    think = _split_think(text, think_in_prompt) if think_tags else None
    answer_part = think[1] if think else text
    found = _final_answer(answer_part, answer)
    if found is None:
        return 0.25 if partial and think else 0.0
    count, start, end = found
    has_reasoning = think is not None if think_tags else bool(answer_part[:start].strip())
    if count == 1 and has_reasoning and len(answer_part[end:].strip()) <= max_tail_chars:
        return 1.0
    return 0.5 if partial else 0.0


@register("format")
def format_reward(think_tags: bool = False, answer: AnswerStyle = "boxed", partial: bool = False,
                  max_tail_chars: int = 200, think_in_prompt: bool = False) -> RewardFn:
    """Format reward (§7); parameters as in ``format_score``."""
    if answer not in ("boxed", "answer_tag"):
        raise ValueError(f"unknown answer style {answer!r}; valid: boxed, answer_tag")

    def reward(completions: list[str], **_: Any) -> list[float]:
        return [format_score(c, think_tags, answer, partial, max_tail_chars, think_in_prompt)
                for c in completion_texts(completions)]

    return reward
