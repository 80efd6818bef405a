"""Format reward: does the completion have the expected structure? (docs/algorithms.md §7, format).

Full credit (1.0) needs all of:

* default: some reasoning text, then exactly one complete final answer
  (``\\boxed{...}``, or ``<answer>...</answer>`` with ``answer="answer_tag"``)
  followed by at most ``max_tail_chars`` characters. Boxes joined only by
  separators, connecting words or assignments (``$x=\\boxed{2}$ and $y=\\boxed{3}$``)
  are one answer (``rewards.extract.answer_boxes``); with ``answer_tag``,
  ``<answer>`` and ``</answer>`` each occur exactly once, in that order;
* ``think_tags=True``: ``<think>`` non-empty reasoning ``</think>`` (one pair, at
  the start, each tag exactly once; with ``think_in_prompt=True`` the opening tag
  belongs to the prompt and must not be repeated), then the answer part, which must hold exactly one
  final answer near its end (boxes inside the reasoning are allowed).

Scoring with ``partial=False``: 1.0 or 0.0. With ``partial=True``:
1.0 as above; 0.5 if a complete final answer exists but a rule is broken
(several answers, no reasoning, too much text after it, a tag missing, repeated or
out of order);
0.25 (think mode only) for a well-formed think block without a final answer;
0.0 when there is no complete final answer at all.
"""

from __future__ import annotations

from typing import Any, Literal

from rewards.extract import answer_boxes, as_text
from rewards.messages import completion_texts
from rewards.registry import RewardFn, register

__all__ = ["format_score", "format_reward"]

AnswerStyle = Literal["boxed", "answer_tag"]


def _final_answer(part: str, text: str, answer: AnswerStyle) -> tuple[int, int, int] | None:
    """``(number of answers, start, end)`` of the last complete, non-empty answer in ``part`` of ``text``.

    Boxes are counted in ``part`` (boxes inside the reasoning are allowed). The
    last answer tag runs from the last ``<answer>`` to the next ``</answer>``; its
    count is the larger of the two tags' counts in the whole ``text``, so a stray,
    repeated or misplaced tag anywhere counts.
    """
    if answer == "boxed":
        answers = answer_boxes(part)
        return (len(answers), answers[-1].start, answers[-1].end) if answers and answers[-1].content else None
    start = part.rfind("<answer>")
    close = part.find("</answer>", max(start, 0))
    if start < 0 or close < 0 or not part[start + len("<answer>") : close].strip():
        return None
    return max(text.count("<answer>"), text.count("</answer>")), start, close + len("</answer>")


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
    found = _final_answer(answer_part, text, answer)
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
