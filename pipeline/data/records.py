"""The `Problem` record and how a data row's columns become one (docs/design.md, "Layout").

    problems = rows_to_problems(rows, "data.jsonl", "line", preset="auto", columns={})

A column preset maps our fields to a layout's columns (`rlvr`, `gsm8k`, `math`, `aime`, `trl`;
`auto` picks one from the first row); answers inside text (GSM8K's `#### 72`, a solution's last
`\\boxed{}`) and TRL's conversational prompts are normalised here. Reading the rows is
`pipeline/data/readers.py`; choosing and filtering problems is `pipeline/data/problems.py`.

Bad input raises `DataError` naming the file, the 1-based line (or row) and the field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import DataError
from pipeline.data.readers import FILE_SUFFIXES
from rewards.code import parse_tests
from rewards.extract import find_boxed as last_boxed  # the scanner the accuracy reward uses on completions

log = logging.getLogger(__name__)

FIELDS = ("problem", "answer", "solution", "level", "source")

# Our field -> the column holding it, per preset; columns are matched case-insensitively.
COLUMN_PRESETS: dict[str, dict[str, str]] = {
    "rlvr": {f: f for f in FIELDS},
    "gsm8k": {"problem": "question", "answer": "answer"},
    "math": {"problem": "problem", "answer": "answer", "solution": "solution", "level": "level"},
    "aime": {"problem": "problem", "answer": "answer", "solution": "solution"},
    "trl": {"problem": "prompt", "answer": "solution", "solution": "solution"},
}
"""Our fields -> a layout's columns. `trl`: TRL's and open-r1's `prompt` (text or a message list) and
`solution`, the gold that TRL's accuracy_reward parses: a bare answer, or a worked solution whose
last `\\boxed{}` is the answer (then also the worked solution SFT trains on)."""
REQUIRED = ("problem", "answer")
ROLES = ("system", "developer", "user", "assistant", "tool")
"""Roles a conversational prompt's messages may have."""
GOLD_MAX_WORDS = 20
"""A gold answer of more words (or several lines) looks like a worked solution: warned about."""


@dataclass
class Problem:
    problem: str
    answer: str
    solution: str = ""
    level: int = 0
    """1-5 for our data; 0 when unknown."""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other columns of the row (e.g. `tests` for code problems)."""
    messages: list[dict[str, str]] | None = None
    """TRL's conversational prompt (`[{"role": "user", "content": ...}]`) when the data holds one;
    `problem` is then its last user message."""

    def to_row(self) -> dict[str, Any]:
        """A flat JSON-ready row in the `rlvr` schema (extra columns after ours; a conversation as `problem`)."""
        row = asdict(self)
        extra, messages = row.pop("extra"), row.pop("messages")
        if messages is not None:
            row["problem"] = messages
        return {**row, **extra}


# ---- answers inside text ---------------------------------------------------------------


def split_gsm8k(text: str, answer: str | None = None) -> tuple[str, str]:
    """GSM8K-style `reasoning #### 72` -> (reasoning without `<<..>>` ending in \\boxed{72}, "72").

    `answer`, when given, is the gold to box instead of the text after `####`.
    """
    reasoning, sep, final = text.rpartition("####")
    if not sep:
        return "", text.strip()
    answer = answer if answer is not None else final.strip().replace(",", "")
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
    return f"{reasoning}\nThe answer is \\boxed{{{answer}}}".lstrip(), answer


def _level(value: Any) -> int:
    """`3`, `"3"` or `"Level 3"` -> 3; anything else -> 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", str(value or ""), flags=re.IGNORECASE)
    return int(match.group(1)) if match else 0


def conversation(value: Any) -> list[dict[str, str]] | None:
    """TRL's conversational prompt: a list of `{"role", "content"}` messages ending with the user's
    turn, copied; `None` when `value` is not a list (plain text). Raises `DataError` saying what is wrong."""
    if not isinstance(value, (list, tuple)):
        return None
    if not value:
        raise DataError("is an empty message list")
    for index, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise DataError(f"is a list but item {index} is not a message "
                            f'{{"role": ..., "content": "text"}} (got {str(message)[:80]})')
        if message["role"] not in ROLES:
            raise DataError(f"message {index} has role {message['role']!r}; valid roles: {', '.join(ROLES)}")
    if value[-1]["role"] != "user":
        raise DataError(f"ends with a {value[-1]['role']!r} message; a conversational prompt ends with the "
                        "user's turn")
    return [{"role": m["role"], "content": m["content"]} for m in value]


# ---- rows to problems ------------------------------------------------------------------


def _detect_preset(columns: Iterable[str]) -> str:
    cols = set(columns)
    lower = {c.lower() for c in cols}
    if {"question", "answer"} <= lower:
        return "gsm8k"
    if {"problem", "answer"} <= cols:
        return "rlvr"
    if {"problem", "answer"} <= lower:
        return "aime"
    if {"problem", "solution"} <= lower:
        return "math"
    if {"prompt", "solution"} <= lower:
        return "trl"
    raise DataError(
        f"cannot tell the column layout from the columns {sorted(cols)}; "
        f"set data.preset ({', '.join(COLUMN_PRESETS)}) or map them with data.columns"
    )


def rows_to_problems(
    rows: list[tuple[int, dict[str, Any]]], where: str, unit: str, preset: str, columns: dict[str, str]
) -> list[Problem]:
    """Map (number, row) pairs to Problems with a preset's columns (`columns` overriding them);
    `where` (the file or hub name) and `unit` ("line"/"row") name a bad row in the `DataError`."""
    if not rows:
        raise DataError(f"{where}: no rows (the file is empty)")
    first_number, first = rows[0]
    if preset == "auto":
        try:
            preset = "rlvr" if columns else _detect_preset(first)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
    if preset not in COLUMN_PRESETS:
        raise DataError(f"data.preset: unknown preset {preset!r}; valid: auto, {', '.join(COLUMN_PRESETS)}")
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise DataError(f"data.columns: unknown field(s) {sorted(unknown)}; valid: {', '.join(FIELDS)}")
    by_lower = {c.lower(): c for c in first}
    mapping = {f: c if c in first else by_lower.get(c.lower(), c) for f, c in COLUMN_PRESETS[preset].items()}
    mapping.update(columns)
    needed = ("problem",) if preset == "math" else REQUIRED
    for name in needed:
        if mapping[name] not in first:
            raise DataError(
                f"{where}, {unit} {first_number}: field {name!r} maps to column {mapping[name]!r}, which is "
                f"not there (columns: {', '.join(first)}); set data.columns or data.preset"
            )
    default_source = Path(where).stem if Path(where).suffix in FILE_SUFFIXES else where
    used = set(mapping.values())
    problems = []
    for number, row in rows:
        values = {f: row.get(c) for f, c in mapping.items()}
        solution = str(values.get("solution") or "")
        answer = values["answer"]
        if isinstance(answer, str) and "####" in answer:  # GSM8K's `reasoning #### 72`, under any mapping
            worked, answer = split_gsm8k(answer)
            solution = solution or worked
        if preset == "math" and (answer is None or str(answer).strip() == ""):
            answer = last_boxed(solution)
        if preset == "trl":
            boxed = last_boxed(solution)
            answer, solution = (boxed, solution) if boxed else (answer, "")
        try:
            messages = conversation(values["problem"])
        except DataError as exc:
            raise DataError(f"{where}, {unit} {number}: field 'problem' (column {mapping['problem']!r}) "
                            f"{exc}") from None
        text = messages[-1]["content"] if messages else values["problem"]
        for name, value in (("problem", text), ("answer", answer)):
            if value is None or str(value).strip() == "":
                hint = " and the solution has no \\boxed{}" if preset == "math" and name == "answer" else ""
                raise DataError(f"{where}, {unit} {number}: field {name!r} (column {mapping[name]!r}) "
                                f"is missing or empty{hint}")
        try:
            parse_tests(row.get("tests"))  # the code reward's formats, checked before training starts
        except ValueError as exc:
            raise DataError(f"{where}, {unit} {number}: column 'tests': {exc}") from None
        problems.append(Problem(
            problem=str(text),
            answer=str(answer).strip(),
            solution=solution,
            level=_level(values.get("level")),
            source=str(values.get("source") or default_source),
            extra={k: v for k, v in row.items() if k not in used},
            messages=messages,
        ))
    _warn_long_gold(problems, [number for number, _ in rows], where, unit, mapping["answer"])
    return problems


def _warn_long_gold(problems: Sequence[Problem], numbers: Sequence[int], where: str, unit: str, column: str) -> None:
    """Warn when gold answers look like worked solutions: every reward would then be 0."""
    long = [(n, p.answer) for n, p in zip(numbers, problems)
            if "\n" in p.answer or len(p.answer.split()) > GOLD_MAX_WORDS]
    if long:
        number, answer = long[0]
        log.warning("%s: %d of %d gold answers (column %r) look like worked solutions, not final answers "
                    "(%s %d: %r); the accuracy reward compares final answers, so map the final-answer "
                    "column with data.columns.answer", where, len(long), len(problems), column, unit, number,
                    answer[:80])

