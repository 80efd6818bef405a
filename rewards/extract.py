"""Final-answer extraction from completions (docs/algorithms.md §7, accuracy).

All scanners are linear in the text length and never raise, so a 1 MB
completion or malformed LaTeX costs milliseconds and yields ``None`` at worst.

Rules (docs/rewards.md, accuracy):

* **One answer from several boxes.** Boxes joined only by separators, short
  connecting words or variable assignments (``$x=\\boxed{2}$ and $y=\\boxed{3}$``)
  form one answer, ``2, 3``; a box after other text (a self-correction,
  ``\\boxed{7}, no: \\boxed{8}``) starts a new answer, and the last answer counts.
* **Digit groups.** ``10\\,000``, ``10{,}000``, ``10\\ 000``, ``10 000`` (groups of
  exactly three digits after a first group of one to three) are the number 10000.
* **Known malformed commands** are repaired: ``\\sqrt(2)`` is ``\\sqrt{2}``.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

__all__ = ["EXTRACT_MODES", "ExtractMode", "Box", "as_text", "answer_boxes", "extract_answer",
           "find_boxed", "join_digit_groups", "normalize_answer", "repair_answer"]

ExtractMode = Literal["boxed", "answer_tag", "last_number"]
EXTRACT_MODES: tuple[str, ...] = ("boxed", "answer_tag", "last_number")

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_SPACES = re.compile(r"\s*")
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.S)  # an escaped char (\{ is literal) or a brace
_BARE_ARGUMENT = re.compile(r"[^\s$]{1,1000}")

# What may stand between two boxes of one answer: math delimiters, spacing, separators,
# a few connecting words (plain or in \text{}), and assignments such as "y=", "x_2 =", "\theta=".
_VARIABLE = r"(?:\\[A-Za-z]+|[A-Za-z])(?:_\{?\w{1,3}\}?)?'?"
_CONNECTOR = (r"\$|\\[()\[\]]|\s|~|\\[,;:! ]|\\q?quad\b|[,;&]|\\\\|\\text\{\s*(?:and|or|,)?\s*\}|"
              r"\b(?:and|or)\b|" + _VARIABLE + r"\s*&?\s*=")
_JOINING_GAP = re.compile(rf"(?:{_CONNECTOR}){{0,40}}")
_MAX_GAP_CHARS = 80
_MAX_NESTED_BOXES = 4

# A digit-group separator between groups of three digits: thin/medium/thick spaces,
# a control space, ~, {,} and plain or Unicode (thin, narrow no-break, no-break) spaces.
_GROUP_SEPARATOR = r"(?:\\[,:; !]|\\thinspace\b\s*|~|\{,\}| |\u2009|\u202f|\u00a0)"
_DIGIT_GROUPS = re.compile(rf"(?<![\d.])\d{{1,3}}(?:{_GROUP_SEPARATOR}\d{{3}})+(?!\d|{_GROUP_SEPARATOR}\d)")
_NUMBER = re.compile(rf"-?(?:\d{{1,3}}(?:(?:,|{_GROUP_SEPARATOR})\d{{3}})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_SQRT_PAREN = re.compile(r"\\sqrt\s*(\[[^\[\]{}]*\])?\s*\(")


class Box(NamedTuple):
    """One final answer in a text: its content, the first box's start and the last box's end."""

    content: str
    start: int
    end: int


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


def _boxes(text: str) -> list[Box] | None:
    """Every top-level ``\\boxed``/``\\fbox`` in order; ``None`` if the last one is never closed.

    Handles nested braces and ``\\boxed 5``; a box nested in another box is part
    of the outer one's content. One left-to-right pass: linear in ``len(text)``.
    """
    found: list[Box] = []
    position = 0
    while command := _BOX_COMMAND.search(text, position):
        i = _SPACES.match(text, command.end()).end()
        if i < len(text) and text[i] == "{":
            end = _group_end(text, i)
            if end is None:
                return None
            found.append(Box(text[i + 1 : end - 1], command.start(), end))
        else:
            token = _BARE_ARGUMENT.match(text, i)
            if token is None:
                return None
            end = token.end()
            found.append(Box(token.group().rstrip(".,;"), command.start(), end))
        position = end
    return found


def _joins(gap: str) -> bool:
    """Does the text between two boxes only connect them (``$ and $y=``)?"""
    return len(gap) <= _MAX_GAP_CHARS and _JOINING_GAP.fullmatch(gap) is not None


def answer_boxes(text: str) -> list[Box] | None:
    """The final answers of ``text`` in order, adjacent boxes merged (module docstring).

    A merged answer's content is its boxes' contents joined by ``", "``; boxes
    with empty content are skipped. ``None`` if the last box is never closed
    (the answer is malformed), ``[]`` if there is no box.
    """
    boxes = _boxes(text)
    if boxes is None:
        return None
    answers: list[list[Box]] = []
    for box in boxes:
        if answers and _joins(text[answers[-1][-1].end : box.start]):
            answers[-1].append(box)
        else:
            answers.append([box])
    merged = []
    for group in answers:
        parts = [content for box in group if (content := _unwrap(box.content))]
        merged.append(Box(", ".join(parts), group[0].start, group[-1].end))
    return merged


def _unwrap(content: str) -> str:
    """``\\boxed{\\boxed{1}}`` -> ``1``: strip boxes that make up the whole content (a few levels)."""
    content = content.strip()
    for _ in range(_MAX_NESTED_BOXES):
        inner = _boxes(content) if content.startswith(("\\boxed", "\\fbox")) else None
        if not inner or len(inner) != 1 or inner[0].start != 0 or inner[0].end != len(content):
            break
        content = inner[0].content.strip()
    return content


def find_boxed(text: str) -> str | None:
    """Content of the last answer in ``text`` (see ``answer_boxes``), stripped; ``None`` if none."""
    answers = answer_boxes(text)
    return answers[-1].content if answers else None


def _answer_tag(text: str) -> str | None:
    start = text.rfind("<answer>")
    end = text.find("</answer>", start) if start >= 0 else -1
    if end < 0:
        return None
    inner = text[start + len("<answer>") : end]
    return find_boxed(inner) if _BOX_COMMAND.search(inner) else inner


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return _strip_group_separators(last.group(0)) if last else None


def _strip_group_separators(number: str) -> str:
    return re.sub(_GROUP_SEPARATOR + "|,", "", number)


_EXTRACTORS = {"boxed": find_boxed, "answer_tag": _answer_tag, "last_number": _last_number}


def extract_answer(text: str, extract: ExtractMode = "boxed") -> str | None:
    """Final answer of ``text``: last ``\\boxed{}`` answer (default), last ``<answer>`` tag, or last number.

    Returns the stripped answer, or ``None`` when there is none (or it is empty/malformed).
    """
    if extract not in _EXTRACTORS:
        raise ValueError(f"unknown extract mode {extract!r}; valid: {', '.join(EXTRACT_MODES)}")
    answer = _EXTRACTORS[extract](as_text(text))
    answer = answer.strip() if answer is not None else None
    return answer or None


def join_digit_groups(answer: str) -> str:
    """``10\\,000`` / ``10{,}000`` / ``10\\ 000`` / ``10 000`` -> ``10000`` (groups of exactly three digits)."""
    return _DIGIT_GROUPS.sub(lambda m: _strip_group_separators(m.group()), answer)


def _repair_sqrt(answer: str) -> str:
    """``\\sqrt(x)`` / ``\\sqrt[3](x)`` -> ``\\sqrt{x}`` / ``\\sqrt[3]{x}`` (balanced parentheses only)."""
    out, position = [], 0
    for match in _SQRT_PAREN.finditer(answer):
        if match.start() < position:
            continue
        depth, close = 0, None
        for j in range(match.end() - 1, len(answer)):
            depth += {"(": 1, ")": -1}.get(answer[j], 0)
            if depth == 0:
                close = j
                break
        if close is None:
            break
        inner = _repair_sqrt(answer[match.end() : close])
        out.append(f"{answer[position : match.start()]}\\sqrt{match.group(1) or ''}{{{inner}}}")
        position = close + 1
    return "".join(out) + answer[position:]


def repair_answer(answer: str) -> str:
    """An answer as math-verify should read it: digit groups joined, ``\\sqrt(x)`` -> ``\\sqrt{x}``.

    Other answers that LaTeX cannot parse whole are left as they are (and then
    score 0: the verifier never accepts a partial parse).
    """
    return _repair_sqrt(join_digit_groups(answer))


def normalize_answer(answer: str) -> str:
    """Trivial normalisation for the string fast path: drop whitespace, ``$`` and trailing ``.``."""
    return "".join(answer.split()).replace("$", "").rstrip(".")
