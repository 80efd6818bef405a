"""Evaluation metrics over sampled answers: pass@k, avg@n, maj@k, and their error bars (docs/algorithms.md §11);
the held-out pairwise accuracy of preference models (§10).

    pass_at_k(n=16, c=3, k=4)         # unbiased estimate from n samples, c of them correct
    avg_at_n([3, 0, 16], n=16)         # mean pass@1 over problems
    maj_at_k(["1/2", "0.5", "2/3"], "\\frac{1}{2}", k=3)
    standard_error([0.75, 0.0, 1.0])   # SE of a mean over problems (per-problem values)
    paired_difference(sft, rl)         # rl - sft over the same problems, with a 95% interval
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.data.preference import EncodedPair
from rewards.math import answers_equivalent

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
    equivalent = equivalent or answers_equivalent
    winner = majority_answer(answers[:k], equivalent)
    return winner is not None and equivalent(winner, gold)


Z_95 = 1.959963984540054
"""The standard normal's 97.5% quantile: a two-sided 95% interval is `mean +- Z_95 * SE`."""


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of `values` (one per problem): `s / sqrt(m)`, `s` the sample
    standard deviation (ddof 1), as lighteval's `*_stderr`; NaN for fewer than two values (§11)."""
    m = len(values)
    if m < 2:
        return math.nan
    mean = sum(values) / m
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (m - 1) / m)


def clustered_standard_error(values: Sequence[float], clusters: Sequence[Hashable]) -> float:
    """Standard error of the pooled mean of `values` when values of one cluster are correlated
    (e.g. several preference pairs of one prompt): the cluster-robust (CR1) estimate
    `sqrt(G / (G-1) * sum_g (sum_{i in g} (v_i - mean))^2) / N` over G clusters, N values.

    With one value per cluster it equals `standard_error`. NaN for fewer than two clusters;
    ValueError if the lengths differ (§10, §11).
    """
    if len(values) != len(clusters):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster labels")
    mean = sum(values) / len(values) if values else 0.0
    residuals: dict[Hashable, float] = {}
    for value, cluster in zip(values, clusters):
        residuals[cluster] = residuals.get(cluster, 0.0) + value - mean
    g = len(residuals)
    if g < 2:
        return math.nan
    return math.sqrt(g / (g - 1) * sum(r * r for r in residuals.values())) / len(values)


@dataclass(frozen=True)
class PairedDifference:
    """`mean` of `b_i - a_i` over `n` problems, its `stderr`, and the 95% interval [`low`, `high`]."""

    mean: float
    stderr: float
    low: float
    high: float
    n: int


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """How much `b` beats `a` on the same problems (per-problem values in the same order, §11).

    The standard error is that of the per-problem differences, so problem difficulty shared by
    both cancels (far narrower than the two unpaired SEs combined); the interval is the normal
    approximation `mean +- 1.96 SE` (Miller 2024, "Adding Error Bars to Evals"). With fewer than
    two problems the SE and interval are NaN. ValueError if the lengths differ or are zero.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"a paired difference needs the same problems on both sides, got {len(a)} and {len(b)}")
    diffs = [y - x for x, y in zip(a, b)]
    mean = sum(diffs) / len(diffs)
    se = standard_error(diffs)
    return PairedDifference(mean, se, mean - Z_95 * se, mean + Z_95 * se, len(diffs))


def held_out_accuracy(outcomes: Sequence[float], pairs: Sequence[EncodedPair]) -> dict[str, Any]:
    """Held-out pairwise accuracy and its standard error (docs/algorithms.md §10).

    `outcomes`: one per pair, 1 ranked right, 0 wrong (DPO counts a tie as 0.5). Pairs of one
    prompt (up to `pairs_per_problem` sampled pairs of a problem) are correlated, so the SE is
    clustered by prompt (`clustered_standard_error`); with one pair per prompt
    it is the usual SE over pairs, about the binomial `sqrt(p (1 - p) / n)`. None (no SE) when
    the pairs come from a single prompt. Returns `pairwise_accuracy`, `pairwise_accuracy_stderr`,
    `eval_pairs` and `eval_prompts` (the clusters).
    """
    if len(outcomes) != len(pairs) or not pairs:
        raise ValueError(f"{len(outcomes)} outcomes for {len(pairs)} pairs")
    prompts = [tuple(p.prompt) for p in pairs]
    se = clustered_standard_error(outcomes, prompts)
    return {"pairwise_accuracy": sum(outcomes) / len(outcomes),
            "pairwise_accuracy_stderr": None if math.isnan(se) else se,
            "eval_pairs": len(pairs), "eval_prompts": len(set(prompts))}
