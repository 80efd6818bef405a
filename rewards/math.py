"""Math accuracy reward and answer-equivalence helpers (docs/algorithms.md §7, accuracy).

The final answer is extracted in the trainer's process (linear-time scanners in
``rewards.extract``: adjacent boxes form one answer, digit groups such as
``10\\,000`` are joined, ``\\sqrt(2)`` is repaired); equivalence with the gold
answer is decided by math-verify (sympy) in worker processes with a hard
wall-clock limit per check (``rewards.verifier_pool``). Answers identical to
the gold after trivial normalisation, or plain numbers of exactly the gold's
value (``0.5`` for ``\\frac{1}{2}``), skip sympy; every other verdict is the
worker's (``rewards._verify_worker``: math-verify with whole parses only and
exact comparison of numbers written without a decimal point).

Equivalence follows math-verify, symmetric for numbers: ``\\frac{1}{2}`` = ``1/2``
= ``0.5``, ``42`` = ``42.0``, ``1,000`` = ``1000``. A decimal matches a value that
rounds to it at the precision it is written with (``0.33`` = ``\\frac{1}{3}``,
``0.0000001`` != ``0.0000002``); numbers without a decimal compare exactly
(``2^{-98}`` != ``2^{-99}``). An answer LaTeX cannot parse whole is wrong (``3 )``
is not ``3``), after known repairs (``4\\sqrt(2)`` is ``4\\sqrt{2}``, not ``4``).
An assignment is compared by its right-hand side, so ``\\boxed{x=3}`` is correct
for gold ``3`` (and gold ``x=3`` accepts ``3``).
A box in the gold (``\\boxed{5}``) is unwrapped first.
"""

from __future__ import annotations

import atexit
import re
import threading
from fractions import Fraction
from typing import Any, Sequence

from rewards.extract import (EXTRACT_MODES, ExtractMode, as_text, extract_answer, find_boxed, normalize_answer,
                             repair_answer)
from rewards.messages import completion_texts
from rewards.registry import register
from rewards.verifier_pool import VerifierPool, default_workers

__all__ = ["AccuracyReward", "accuracy", "extract_answer", "answers_equivalent", "verify_batch",
           "MAX_ANSWER_CHARS"]

MAX_ANSWER_CHARS = 1000  # a longer "final answer" is judged wrong without parsing it
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?")
_LATEX_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}")


def _gold_answer(gold: object) -> str:
    text = as_text(gold).strip()
    boxed = find_boxed(text) if ("\\boxed" in text or "\\fbox" in text) else None
    return (boxed if boxed is not None else text).strip()


def _as_rational(answer: str) -> Fraction | None:
    """Exact value of a plain number (``-3``, ``0.25``, ``3/4``, ``\\frac{3}{4}``), else ``None``."""
    try:
        if latex := _LATEX_FRACTION.fullmatch(answer):
            sign = -1 if latex.group(1) else 1
            return sign * Fraction(int(latex.group(2)), int(latex.group(3)))
        return Fraction(answer) if _PLAIN_NUMBER.fullmatch(answer) else None
    except (ValueError, ZeroDivisionError):  # 1.5/2, a zero denominator, too many digits
        return None


def _same_number(answer: str, gold: str) -> bool:
    """Both plain numbers with exactly the same value (then math-verify agrees: skip sympy)."""
    value = _as_rational(answer)
    return value is not None and value == _as_rational(normalize_answer(gold))


def _judge(pool: VerifierPool, pairs: Sequence[tuple[str | None, str]]) -> list[bool]:
    """Verdicts for ``(answer, gold)``: fast path on identical strings, the rest in ``pool``."""
    verdicts = [False] * len(pairs)
    to_check: dict[int, tuple[str, str]] = {}
    for i, (answer, gold) in enumerate(pairs):
        if not answer or not gold or len(answer) > MAX_ANSWER_CHARS:
            continue
        answer, gold = repair_answer(answer), repair_answer(gold)
        normalized = normalize_answer(answer)
        if normalized and (normalized == normalize_answer(gold) or _same_number(normalized, gold)):
            verdicts[i] = True
        elif normalized:
            to_check[i] = (answer, gold)
    for i, verdict in zip(to_check, pool.verify(list(to_check.values()))):
        verdicts[i] = verdict
    return verdicts


_shared_pools: dict[tuple[int, float], VerifierPool] = {}
_shared_lock = threading.Lock()


def _shared_pool(timeout: float, workers: int | None) -> VerifierPool:
    workers = workers or default_workers()
    with _shared_lock:
        if (workers, timeout) not in _shared_pools:
            _shared_pools[workers, timeout] = VerifierPool(workers=workers, timeout=timeout)
        return _shared_pools[workers, timeout]


@atexit.register
def _close_shared_pools() -> None:
    with _shared_lock:
        for pool in _shared_pools.values():
            pool.close()
        _shared_pools.clear()


def verify_batch(pairs: list[tuple[str, str]], timeout: float = 5.0, workers: int | None = None) -> list[bool]:
    """Is each ``(answer, gold)`` equivalent? Checked in parallel in a shared worker pool.

    Answers are final answers (not whole completions); a gold in ``\\boxed{}`` is
    unwrapped. ``timeout`` is the hard wall-clock limit per pair: past it the
    verdict is ``False``. Never raises on any text.
    """
    pool = _shared_pool(timeout, workers)
    return _judge(pool, [(as_text(answer).strip(), _gold_answer(gold)) for answer, gold in pairs])


def answers_equivalent(a: str, b: str, timeout: float = 5.0, workers: int | None = None) -> bool:
    """Symmetric equivalence of two final answers (for grouping samples for maj@k).

    True only if math-verify accepts each as the other (or they are identical
    after trivial normalisation); runs in the shared worker pool, never hangs.
    """
    forward, backward = verify_batch([(a, b), (b, a)], timeout=timeout, workers=workers)
    return forward and backward


class AccuracyReward:
    """``correct`` if the extracted final answer is equivalent to the ``answer`` column, else ``wrong``."""

    def __init__(self, correct: float = 1.0, wrong: float = 0.0, extract: ExtractMode = "boxed",
                 timeout: float = 5.0, workers: int | None = None) -> None:
        if extract not in EXTRACT_MODES:
            raise ValueError(f"unknown extract mode {extract!r}; valid: {', '.join(EXTRACT_MODES)}")
        self.correct, self.wrong, self.extract = float(correct), float(wrong), extract
        self._pool = VerifierPool(workers=workers, timeout=timeout)

    def __call__(self, completions: list[str], answer: Sequence[Any] | None = None,
                 **_: Any) -> list[float]:
        if answer is None:
            raise ValueError("the accuracy reward needs an 'answer' column (gold answers)")
        completions = completion_texts(completions)
        pairs = [(extract_answer(completion, self.extract), _gold_answer(gold))
                 for completion, gold in zip(completions, answer, strict=True)]
        return [self.correct if ok else self.wrong for ok in _judge(self._pool, pairs)]

    def close(self) -> None:
        self._pool.close()


@register("accuracy")
def accuracy(correct: float = 1.0, wrong: float = 0.0, extract: ExtractMode = "boxed",
             timeout: float = 5.0, workers: int | None = None) -> AccuracyReward:
    """Accuracy reward (§7): ``correct``/``wrong`` (DAPO: +1/-1); ``extract`` is
    ``boxed`` | ``answer_tag`` | ``last_number``; ``timeout`` is the hard limit per check."""
    return AccuracyReward(correct=correct, wrong=wrong, extract=extract, timeout=timeout, workers=workers)
