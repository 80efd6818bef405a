"""Preference pairs (prompt, chosen, rejected) for the reward model and DPO (docs/algorithms.md §10).

    pairs = load_pairs("prefs.jsonl")             # a file with prompt/chosen/rejected columns
    pairs = pairs_from_samples(problems, texts, correct, seed=0, min_pairs=64, pairs_per_problem=4)
    encoded = encode_pairs(tokenizer, pairs, system_prompt, max_length=512)
    batch = pair_batch(encoded[:4], pad_id)       # rows 0..3 chosen, rows 4..7 rejected

A prompt is the problem text (rendered with the chat template when encoded) or an already
rendered prompt. Bad rows raise `DataError` naming the file, the line and the field; a pair
whose chosen and rejected are identical carries no preference and is skipped with a warning
(an error if every pair is such).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import DataError
from pipeline.core.forward import SequenceBatch, collate
from pipeline.core.tokens import fit_response, prompt_ids, response_ids
from pipeline.data.readers import read_rows
from pipeline.data.records import Problem
from pipeline.data.subsets import split_holdout

log = logging.getLogger(__name__)

FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    origin: str = "file"
    """`file`, `sampled` (verified-correct vs verified-wrong sample) or `gold` (worked solution vs wrong sample)."""
    extra: dict[str, Any] = field(default_factory=dict)


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Pairs from a .jsonl/.json/.parquet file with non-empty string `prompt`, `chosen`, `rejected`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"preference file not found: {path}")
    rows, unit = read_rows(path)
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty)")
    pairs, identical = [], []
    for number, row in rows:
        for name in FIELDS:
            value = row.get(name)
            if name not in row:
                raise DataError(f"{path}, {unit} {number}: missing field {name!r} (columns: {', '.join(row)})")
            if not isinstance(value, str):
                raise DataError(f"{path}, {unit} {number}: field {name!r} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise DataError(f"{path}, {unit} {number}: field {name!r} is empty")
        if row["chosen"].strip() == row["rejected"].strip():
            identical.append(number)
            continue
        extra = {k: v for k, v in row.items() if k not in (*FIELDS, "origin")}
        origin = str(row.get("origin") or "file")
        pairs.append(PreferencePair(row["prompt"], row["chosen"], row["rejected"], origin, extra))
    if not pairs:
        raise DataError(f"{path}: every pair has identical fields 'chosen' and 'rejected'; no preference to learn")
    if identical:
        shown = ", ".join(map(str, identical[:5])) + (", ..." if len(identical) > 5 else "")
        log.warning("%s: skipped %d pair(s) whose 'chosen' equals 'rejected' (%s %s)",
                    path, len(identical), unit + "s", shown)
    return pairs


def save_pairs(path: str | Path, pairs: Sequence[PreferencePair]) -> None:
    """Write pairs as JSONL that `load_pairs` reads back (e.g. to reuse sampled pairs for DPO)."""
    with Path(path).open("w", encoding="utf-8") as f:
        for pair in pairs:
            row = asdict(pair)
            f.write(json.dumps({**row.pop("extra"), **row}, ensure_ascii=False) + "\n")


def pairs_from_samples(problems: Sequence[Problem], texts: Sequence[Sequence[str]],
                       correct: Sequence[Sequence[bool]], *, seed: int, min_pairs: int,
                       pairs_per_problem: int) -> list[PreferencePair]:
    """Pair verified-correct with verified-wrong samples of the same problem.

    Every distinct correct sample meets every distinct wrong one, up to `pairs_per_problem`
    pairs per problem, chosen so that each sample is used as evenly as the cap allows.
    If that yields fewer than `min_pairs`, add pairs of the gold worked solution (chosen) with a
    wrong sample (rejected) from problems that gave no sampled pair, and say so in the log.
    """
    rng = random.Random(seed)
    pairs: list[PreferencePair] = []
    unpaired: list[tuple[Problem, list[str]]] = []
    for problem, samples, verdicts in zip(problems, texts, correct, strict=True):
        right = list(dict.fromkeys(t for t, ok in zip(samples, verdicts) if ok and t.strip()))
        wrong = list(dict.fromkeys(t for t, ok in zip(samples, verdicts) if not ok and t.strip()))
        rng.shuffle(right)
        rng.shuffle(wrong)
        extra = {"answer": problem.answer}
        pairs += [PreferencePair(problem.problem, c, r, "sampled", dict(extra))
                  for c, r in _balanced_product(right, wrong, pairs_per_problem)]
        if not right and wrong and problem.solution.strip():
            unpaired.append((problem, wrong))
    sampled = len(pairs)
    if sampled < min_pairs and unpaired:
        rng.shuffle(unpaired)
        gold = [PreferencePair(p.problem, p.solution, wrong[0], "gold", {"answer": p.answer})
                for p, wrong in unpaired[: min_pairs - sampled]]
        pairs += gold
        log.warning("sampling gave %d correct/wrong pairs (< %d wanted); added %d pairs of the gold "
                    "worked solution (chosen) with a wrong sample (rejected)", sampled, min_pairs, len(gold))
    log.info("built %d preference pairs from %d problems (%d sampled, %d gold)",
             len(pairs), len(problems), sampled, len(pairs) - sampled)
    if not pairs:
        raise DataError("sampling gave no usable pair (no problem had both a correct and a wrong answer, "
                        "and no problem with a wrong answer had a worked solution); set a preference file "
                        "with reward_model.pairs / dpo.pairs or sample more")
    return pairs


def _balanced_product(right: list[str], wrong: list[str], limit: int) -> list[tuple[str, str]]:
    """Up to `limit` distinct (right, wrong) pairs, walking diagonals so every sample recurs evenly."""
    n = len(right) * len(wrong)
    order = [(i % len(right), (i + i // math.lcm(len(right), len(wrong))) % len(wrong)) for i in range(n)] if n else []
    return [(right[a], wrong[b]) for a, b in order[:limit]]


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], system_prompt: str,
                 max_length: int) -> list[EncodedPair]:
    """Token ids per pair (responses end in EOS, cut to `max_length`); over-long prompts dropped."""
    encoded = []
    for pair in pairs:
        prompt = prompt_ids(tokenizer, pair.prompt, system_prompt)
        chosen = fit_response(prompt, response_ids(tokenizer, pair.chosen), max_length)
        rejected = fit_response(prompt, response_ids(tokenizer, pair.rejected), max_length)
        if chosen is not None and rejected is not None and chosen != rejected:
            encoded.append(EncodedPair(prompt, chosen, rejected))
    if len(encoded) < len(pairs):
        log.warning("dropped %d of %d pairs whose prompt leaves no room under max_length=%d "
                    "(or whose responses are identical once cut)", len(pairs) - len(encoded), len(pairs), max_length)
    if not encoded:
        raise DataError(f"no pair fits max_length={max_length}; raise it")
    return encoded


def pair_batch(pairs: Sequence[EncodedPair], pad_id: int) -> SequenceBatch:
    """One batch of 2B rows: the chosen responses (rows 0..B-1), then the rejected ones."""
    prompts = [p.prompt for p in pairs] * 2
    return collate(prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


def split_by_prompt(pairs: Sequence[EncodedPair], fraction: float, seed: int) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """(train, held-out) with all pairs of a prompt on the same side (no problem leaks into both)."""
    prompts = list(dict.fromkeys(tuple(p.prompt) for p in pairs))
    if len(prompts) < 2:
        return split_holdout(pairs, fraction, seed)
    held = set(split_holdout(prompts, fraction, seed)[1])
    return [p for p in pairs if tuple(p.prompt) not in held], [p for p in pairs if tuple(p.prompt) in held]
