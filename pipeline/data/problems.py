"""Problems: one record type and its loaders (local JSONL/Parquet, the hub, reasoning-gym).

    problems = load_problems("datasets/train.jsonl", levels=[1, 2])
    problems = load_problems_for(config.data, "train", seed=0)

Turning problems into prompts is `pipeline/data/prompts.py`.

Bad input raises `DataError` naming the file, the 1-based line (or row) and the field.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.config import DataConfig, DataError
from pipeline.data.subsets import seeded_subset
from rewards.code import parse_tests
from rewards.extract import find_boxed as last_boxed  # the scanner the accuracy reward uses on completions

log = logging.getLogger(__name__)

GYM_PREFIX = "reasoning_gym/"
FIELDS = ("problem", "answer", "solution", "level", "source")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
TEST_SEED_OFFSET = 1_000_003
"""`load_problems_for(..., "test")` draws reasoning-gym problems from seed + this, clear of train's."""

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
HUB_TIMEOUT_S = 5.0
"""How long the hub may take to answer before a hub dataset counts as unreachable."""
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


# ---- reading rows ----------------------------------------------------------------------


def read_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """(line or row number, row) pairs and the unit ("line"/"row") used in messages."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        return list(enumerate(rows, 1)), "row"
    if path.suffix not in FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        numbered, unit = list(enumerate(rows, 1)), "row"
    else:
        numbered, unit = [], "line"
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
    for number, row in numbered:
        if not isinstance(row, dict):
            raise DataError(f"{path}, {unit} {number}: expected a JSON object, got {type(row).__name__}")
    return numbered, unit


def check_hub(name: str) -> None:
    """Raise DataError within HUB_TIMEOUT_S when the hub cannot be reached or has no dataset `name`.

    `datasets.load_dataset` retries an unreachable hub for about 30 s; this asks once. Nothing
    is asked in offline mode (HF_HUB_OFFLINE=1), where `datasets` reads its cache.
    """
    from huggingface_hub import HfApi, is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if is_offline_mode():
        return
    repo = name.partition(":")[0]
    try:
        HfApi().dataset_info(repo, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise DataError(f"{name!r} is neither a local file nor a dataset on the Hugging Face hub") from None
    except HfHubHTTPError:
        return  # reachable (gated, rate-limited, ...): load_dataset's own error says more
    except Exception as exc:  # noqa: BLE001 - any network failure (DNS, refused, timeout) means unreachable
        raise DataError(
            f"cannot reach the Hugging Face hub for {name!r} within {HUB_TIMEOUT_S:.0f} s ({type(exc).__name__}); "
            f"set HF_HUB_OFFLINE=1 to use a cached copy, or download it where the hub is reachable "
            f"and point the config at a local .jsonl or .parquet file"
        ) from None


def _read_hub(name: str, split: str) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a hub dataset; `name:config` selects a configuration (e.g. `openai/gsm8k:main`)."""
    import datasets

    check_hub(name)
    repo, _, config = name.partition(":")
    try:
        rows = datasets.load_dataset(repo, config or None, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same advice
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"cannot load {name!r} (split {split!r}) from the Hugging Face hub "
            f"({type(exc).__name__}: {reason}); download it where the hub is reachable and point "
            f"data.train/data.test at a local .jsonl or .parquet file"
        ) from None
    return list(enumerate(rows, 1))


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


def _convert(
    rows: list[tuple[int, dict[str, Any]]], where: str, unit: str, preset: str, columns: dict[str, str]
) -> list[Problem]:
    """Map rows to Problems with a preset's columns (`columns` overriding them)."""
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


# ---- reasoning-gym ---------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(","))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def gym_problems(task: str, size: int, seed: int, **config: Any) -> list[Problem]:
    """`size` problems drawn from reasoning-gym's `task` generator; its answer is the gold.

    The solution is the generator's own worked answer where it has one (gsm_symbolic),
    else "". The generator's metadata is kept in `extra["metadata"]`.
    """
    import reasoning_gym

    try:
        entries = reasoning_gym.create_dataset(task, size=size, seed=seed, **config)
    except (ValueError, TypeError, AssertionError) as exc:
        raise DataError(f"{GYM_PREFIX}{task}: {exc or type(exc).__name__}") from None
    problems = []
    for entry in entries:
        cot = entry["metadata"].get("answer_cot")
        answer = str(entry["answer"])
        solution = split_gsm8k(cot, answer)[0] if isinstance(cot, str) else ""
        problems.append(Problem(
            str(entry["question"]), answer, solution, 0, f"{GYM_PREFIX}{task}",
            {"metadata": entry["metadata"]},
        ))
    return problems


def _load_gym(spec: str, seed: int, size: int) -> list[Problem]:
    """`reasoning_gym/<task>?size=500&seed=3&max_terms=2`: other keys go to the task's config."""
    task, _, query = spec[len(GYM_PREFIX):].partition("?")
    config: dict[str, Any] = {"size": size, "seed": seed}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"{spec}: query item {item!r} must look like key=value")
        config[key] = _parse_value(value)
    return gym_problems(task, **config)


# ---- loading ---------------------------------------------------------------------------


def _select(
    problems: list[Problem], where: str, levels: Sequence[int] | None, sources: Sequence[str] | None,
    limit: int | None, seed: int,
) -> list[Problem]:
    kept = [
        p for p in problems
        if (levels is None or p.level in levels)
        and (sources is None or any(p.source == s or p.source.startswith(s.rstrip("/") + "/") for s in sources))
    ]
    if not kept:
        raise DataError(
            f"{where}: no problems left after filtering (levels={levels}, sources={sources}); the data has "
            f"levels {sorted({p.level for p in problems})} and sources {sorted({p.source for p in problems})}"
        )
    return seeded_subset(kept, limit, seed)


def load_problems(
    spec: str,
    *,
    split: str = "train",
    preset: str = "auto",
    columns: dict[str, str] | None = None,
    levels: Sequence[int] | None = None,
    sources: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    gym_size: int = 1000,
) -> list[Problem]:
    """Problems from a local .jsonl/.json/.parquet file, a hub dataset or `reasoning_gym/<task>`.

    `levels`/`sources` filter (a source also matches its sub-sources: `reasoning_gym` matches
    `reasoning_gym/chain_sum`); `limit` keeps a seeded random subset in file order.
    """
    if spec.startswith(GYM_PREFIX):
        problems = _load_gym(spec, seed, gym_size)
    else:
        path = Path(spec).expanduser()
        if path.is_file():
            rows, unit = read_rows(path)
        elif is_local(spec):
            raise DataError(_not_found(path))
        else:
            rows, unit = _read_hub(spec, split), "row"
        problems = _convert(rows, spec, unit, preset, dict(columns or {}))
    return _select(problems, spec, levels, sources, limit, seed)


def is_local(spec: str) -> bool:
    """Whether `spec` names a local path rather than a hub dataset: it exists, ends in a data file's
    suffix, starts with `.`, `/` or `~`, or its first path component exists here (`datasets/train`)."""
    path = Path(spec).expanduser()
    first = Path(spec.split("/")[0]).expanduser()
    return (path.exists() or path.suffix in FILE_SUFFIXES or spec.startswith((".", "/", "~"))
            or (spec.split("/")[0] != "" and first.exists()))


def _not_found(path: Path) -> str:
    """'data file not found: X' with the data files the user probably meant."""
    if path.is_dir():
        files = sorted(str(f) for f in path.iterdir() if f.suffix in FILE_SUFFIXES)
        return f"{path} is a folder, not a data file" + (f"; files in it: {', '.join(files[:5])}" if files else "")
    siblings = ([f for f in path.parent.iterdir() if f.suffix in FILE_SUFFIXES and f.is_file()]
                if path.parent.is_dir() else [])
    near = [f for f in siblings if f.stem == path.name or f.stem == path.stem]
    near = near or [path.parent / n for n in difflib.get_close_matches(path.name, [f.name for f in siblings], n=2)]
    hint = f" (did you mean {' or '.join(str(f) for f in near)}?)" if near else ""
    return f"data file not found: {path}{hint}"


def load_problems_for(config: DataConfig, which: Literal["train", "test"], seed: int = 0) -> list[Problem]:
    """The train or test problems a `DataConfig` names (the test split of hub datasets is "test")."""
    train = which == "train"
    return load_problems(
        config.train if train else config.test,
        split=config.split if train else "test",
        preset=config.preset,
        columns=config.columns,
        levels=config.levels,
        sources=config.sources,
        limit=config.limit if train else config.test_limit,
        seed=seed if train else seed + TEST_SEED_OFFSET,
        gym_size=config.gym_size,
    )
