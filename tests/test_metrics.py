"""pass@k, avg@n and maj@k (docs/algorithms.md §11) against brute force and hand-made answer sets."""

from __future__ import annotations

import itertools
import math

import pytest

from pipeline.metrics import avg_at_n, maj_at_k, majority_answer, pass_at_k


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
