"""pass@k, avg@n and maj@k (docs/algorithms.md §11) against brute force and hand-made answer sets."""

from __future__ import annotations

import itertools
import math

import pytest

from pipeline.eval.pass_at_k import (avg_at_n, clustered_standard_error, maj_at_k, majority_answer, paired_difference,
                              pass_at_k, standard_error)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The fraction of all k-subsets of n samples (c correct) holding at least one correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [
    (5, 2, 1), (5, 2, 2), (5, 2, 3), (6, 1, 4), (8, 3, 2), (8, 5, 4), (10, 4, 7), (7, 6, 3),
    (6, 0, 3), (6, 6, 3), (6, 3, 6), (4, 0, 4), (1, 1, 1), (1, 0, 1),
])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(16, 0, 4) == 0.0
    assert pass_at_k(16, 16, 4) == 1.0
    assert pass_at_k(16, 1, 16) == 1.0  # k = n: any correct sample is in the only subset
    assert pass_at_k(16, 3, 1) == pytest.approx(3 / 16)
    # large n stays finite and matches the closed form (no huge binomials)
    assert pass_at_k(1000, 10, 50) == pytest.approx(1 - math.comb(990, 50) / math.comb(1000, 50))


@pytest.mark.parametrize("n,c,k", [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_n():
    assert avg_at_n([4, 0, 2], 4) == pytest.approx(0.5)
    assert avg_at_n([1], 1) == 1.0
    with pytest.raises(ValueError):
        avg_at_n([], 4)
    with pytest.raises(ValueError):
        avg_at_n([5], 4)


def same_value(a: str, b: str) -> bool:
    """A fast stand-in for math-verify: equal as fractions after a few textual forms."""
    from fractions import Fraction

    def value(text: str) -> Fraction:
        text = text.replace("\\frac{", "").replace("}{", "/").replace("}", "")
        return Fraction(text)

    return value(a) == value(b)


def test_majority_class_wins_over_repeated_string():
    answers = ["2/3", "1/2", "2/3", "0.5", "\\frac{1}{2}"]
    assert majority_answer(answers, same_value) == "1/2"
    assert maj_at_k(answers, "0.5", 5, same_value)
    assert not maj_at_k(answers, "2/3", 5, same_value)


def test_ties_go_to_the_class_seen_first():
    assert majority_answer(["3", "5", "5", "3"], same_value) == "3"
    assert majority_answer(["5", "3", "3", "5"], same_value) == "5"
    assert maj_at_k(["3", "5", "5", "3"], "3", 4, same_value)
    assert not maj_at_k(["3", "5", "5", "3"], "5", 4, same_value)


def test_none_answers_never_win():
    answers = [None, None, None, "7"]
    assert majority_answer(answers, same_value) == "7"
    assert maj_at_k(answers, "7", 4, same_value)
    assert not maj_at_k([None, None], "7", 2, same_value)


def test_only_the_first_k_answers_count():
    answers = ["4", "9", "9", "9"]
    assert maj_at_k(answers, "4", 1, same_value)
    assert maj_at_k(answers, "4", 2, same_value)  # a 1-1 tie: "4" appeared first
    assert not maj_at_k(answers, "4", 3, same_value)
    with pytest.raises(ValueError):
        maj_at_k(answers, "4", 5, same_value)


def test_maj_at_k_with_math_verify():
    answers = ["2/3", "1/2", "2/3", "0.5", "\\frac{1}{2}"]
    assert maj_at_k(answers, "\\frac{1}{2}", 5)
    assert not maj_at_k(answers, "2/3", 5)
    assert maj_at_k(answers, "2/3", 3)


# --- error bars (§11): standard errors over problems, clustered SEs, paired differences


def test_standard_error_by_hand():
    values = [0.75, 0.0, 1.0]
    mean = sum(values) / 3
    hand = math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)  # sample std (ddof 1) / sqrt(m)
    assert standard_error(values) == pytest.approx(hand)
    assert standard_error([1.0, 0.0, 1.0, 0.0]) == pytest.approx(math.sqrt(1 / 3) / 2)  # s^2 = 1/3, m = 4
    assert standard_error([0.3, 0.3]) == 0.0
    assert math.isnan(standard_error([1.0]))  # undefined over one problem


def test_clustered_standard_error():
    values = [1.0, 1.0, 0.0, 0.0]
    # one value per cluster: the plain SE
    assert clustered_standard_error(values, ["a", "b", "c", "d"]) == pytest.approx(standard_error(values))
    # two clusters of two identical outcomes: residual sums +1 and -1 -> sqrt(2/1 * 2) / 4 = 0.5,
    # wider than the 0.289 that treating the four values as independent would claim
    assert clustered_standard_error(values, ["a", "a", "b", "b"]) == pytest.approx(0.5)
    assert standard_error(values) == pytest.approx(0.2887, abs=1e-4)
    assert math.isnan(clustered_standard_error(values, ["a"] * 4))
    with pytest.raises(ValueError, match="cluster"):
        clustered_standard_error(values, ["a"])


def test_paired_difference_by_hand():
    a = [0.0, 1.0, 0.0, 1.0, 1.0]
    b = [1.0, 1.0, 0.0, 1.0, 1.0]
    d = paired_difference(a, b)
    # differences [1, 0, 0, 0, 0]: mean 0.2, sample std sqrt(0.2), SE sqrt(0.2) / sqrt(5) = 0.2
    assert (d.mean, d.n) == (pytest.approx(0.2), 5)
    assert d.stderr == pytest.approx(0.2)
    assert (d.low, d.high) == (pytest.approx(0.2 - 1.96 * 0.2, abs=1e-4), pytest.approx(0.2 + 1.96 * 0.2, abs=1e-4))
    assert paired_difference(b, a).mean == pytest.approx(-0.2)


def test_pairing_cancels_shared_problem_difficulty():
    """Both checkpoints solve the easy problems and fail the hard ones; b adds one point on each
    problem. Unpaired SEs are large (difficulty varies), the paired SE is zero."""
    a = [0.0, 0.1, 0.8, 0.9, 0.2, 0.7]
    b = [x + 0.1 for x in a]
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.1) and d.stderr == pytest.approx(0.0, abs=1e-12)
    assert math.hypot(standard_error(a), standard_error(b)) > 0.2
    with pytest.raises(ValueError, match="same problems"):
        paired_difference(a, b[:-1])
