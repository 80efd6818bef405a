"""Evaluation metrics over sampled answers: pass@k, avg@n, maj@k (docs/algorithms.md §11).

    pass_at_k(n=16, c=3, k=4)         # unbiased estimate from n samples, c of them correct
    avg_at_n([3, 0, 16], n=16)         # mean pass@1 over problems
    maj_at_k(["1/2", "0.5", "2/3"], "\\frac{1}{2}", k=3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Equivalence = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k, `1 - C(n-c, k) / C(n, k)` (§11), as a stable product.

    `C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)`, which never forms large binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def avg_at_n(correct_counts: Sequence[int], n: int) -> float:
    """avg@n (mean pass@1, §11): the mean over problems of `c / n`."""
    if not correct_counts:
        raise ValueError("avg@n needs at least one problem")
    if n < 1 or any(not 0 <= c <= n for c in correct_counts):
        raise ValueError(f"avg@n needs n >= 1 and every count in [0, n], got n={n}")
    return sum(correct_counts) / (len(correct_counts) * n)


def majority_answer(answers: Sequence[str | None], equivalent: Equivalence) -> str | None:
    """The representative of the largest equivalence class of `answers`, or None if all are None.

    A class is represented by its first member; an answer joins the first class whose
    representative it is equivalent to. Ties go to the class that appeared first.
    """
    classes: list[list[str]] = []
    for answer in answers:
        if answer is None:
            continue
        for members in classes:
            if equivalent(members[0], answer):
                members.append(answer)
                break
        else:
            classes.append([answer])
    if not classes:
        return None
    # max() keeps the first of equally large classes, i.e. the one that appeared earliest.
    return max(classes, key=len)[0]


def maj_at_k(
    answers: Sequence[str | None], gold: str, k: int, equivalent: Equivalence | None = None
) -> bool:
    """maj@k / cons@k (§11): is the most frequent of the first `k` answers equivalent to `gold`?

    `answers` are one problem's extracted answers in sampling order (None = no answer; it never
    wins). `equivalent` defaults to `rewards.math.answers_equivalent` (math-verify).
    """
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj@k needs 1 <= k <= {len(answers)} (the number of answers), got k={k}")
    if equivalent is None:
        from rewards.math import answers_equivalent as equivalent
    winner = majority_answer(answers[:k], equivalent)
    return winner is not None and equivalent(winner, gold)
