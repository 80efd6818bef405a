"""Final-answer extraction from completions (docs/algorithms.md §7, accuracy).

All scanners are linear in the text length and never raise, so a 1 MB
completion or malformed LaTeX costs milliseconds and yields ``None`` at worst.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["EXTRACT_MODES", "ExtractMode", "as_text", "count_boxes", "extract_answer", "find_boxed",
           "last_box", "normalize_answer"]

ExtractMode = Literal["boxed", "answer_tag", "last_number"]
EXTRACT_MODES: tuple[str, ...] = ("boxed", "answer_tag", "last_number")

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_SPACES = re.compile(r"\s*")
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.S)  # an escaped char (\{ is literal) or a brace
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def as_text(value: object) -> str:
    """Coerce a completion/answer to ``str``: bytes decode leniently, ``None`` -> ``""``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _group_end(text: str, open_at: int) -> int | None:
    """Index just past the ``}`` closing the group opened at ``open_at``; ``None`` if never closed."""
    depth = 0
    for token in _BRACE_TOKENS.finditer(text, open_at):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return token.end()
    return None


def last_box(text: str) -> tuple[str, int, int] | None:
    """``(argument, start, end)`` of the last ``\\boxed``/``\\fbox`` in ``text``.

    Handles ``\\boxed{..}`` with nested braces and ``\\boxed 5``; ``start`` is the
    command's index, ``end`` the index just past its argument. ``None`` if there
    is no box or the last one is never closed (the answer is malformed).
    """
    start, command = max((text.rfind(cmd), cmd) for cmd in _BOX_COMMANDS)
    while start >= 0 and text[start + len(command) : start + len(command) + 1].isalpha():
        # a longer macro such as \boxedanswer: keep looking further left
        start, command = max((text.rfind(cmd, 0, start), cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    i = _SPACES.match(text, start + len(command)).end()
    if i < len(text) and text[i] == "{":
        end = _group_end(text, i)
        return (text[i + 1 : end - 1], start, end) if end is not None else None
    token = re.match(r"[^\s$]+", text[i : i + 1000])
    return (token.group(0).rstrip(".,;"), start, i + token.end()) if token else None


def count_boxes(text: str) -> int:
    """Number of ``\\boxed``/``\\fbox`` commands in ``text``."""
    return len(_BOX_COMMAND.findall(text))


def find_boxed(text: str) -> str | None:
    """Argument of the last ``\\boxed``/``\\fbox`` in ``text`` (see ``last_box``)."""
    box = last_box(text)
    return box[0] if box else None


def _answer_tag(text: str) -> str | None:
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    inner = text[start + len("<answer>") : end]
    return find_boxed(inner) if any(cmd in inner for cmd in _BOX_COMMANDS) else inner


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return last.group(0).replace(",", "") if last else None


_EXTRACTORS = {"boxed": find_boxed, "answer_tag": _answer_tag, "last_number": _last_number}


def extract_answer(text: str, extract: ExtractMode = "boxed") -> str | None:
    """Final answer of ``text``: last ``\\boxed{}`` (default), last ``<answer>`` tag, or last number.

    Returns the stripped answer, or ``None`` when there is none (or it is empty/malformed).
    """
    if extract not in _EXTRACTORS:
        raise ValueError(f"unknown extract mode {extract!r}; valid: {', '.join(EXTRACT_MODES)}")
    answer = _EXTRACTORS[extract](as_text(text))
    answer = answer.strip() if answer is not None else None
    return answer or None


def normalize_answer(answer: str) -> str:
    """Trivial normalisation for the string fast path: drop whitespace, ``$`` and trailing ``.``."""
    return "".join(answer.split()).replace("$", "").rstrip(".")
