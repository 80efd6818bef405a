"""Math accuracy reward: extraction, equivalence, bad input, time limits (docs/algorithms.md §7)."""

import time

import pytest

from rewards.extract import extract_answer
from rewards.math import AccuracyReward, answers_equivalent, verify_batch
from rewards.verifier_pool import VerifierPool

TIMEOUT = 2.0
HUGE = "9^{9^{9^9}}"


@pytest.fixture(scope="module")
def accuracy():
    reward = AccuracyReward(timeout=TIMEOUT, workers=2)
    reward(["\\boxed{1}"], answer=["2"])  # start the workers outside the timed tests
    yield reward
    reward.close()


@pytest.fixture(scope="module")
def dapo():
    reward = AccuracyReward(correct=1.0, wrong=-1.0, timeout=TIMEOUT, workers=2)
    yield reward
    reward.close()


@pytest.mark.parametrize("text, expected", [
    ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}} and nested {braces}", "\\frac{\\sqrt{2}}{2}"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("the result: \\boxed 5.", "5"),
    ("\\fbox{7}", "7"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    ("\\boxed{3} but then \\boxed{4", None),
    ("\\boxed{}", None),
    ("no answer here", None),
    ("", None),
])
def test_extract_boxed(text, expected):
    assert extract_answer(text) == expected


def test_extract_other_modes():
    assert extract_answer("<think>2</think><answer> 12 </answer>", "answer_tag") == "12"
    assert extract_answer("<answer>\\boxed{3}</answer>", "answer_tag") == "3"
    assert extract_answer("no tag", "answer_tag") is None
    assert extract_answer("1,000 apples then 3.5 and -2", "last_number") == "-2"
    assert extract_answer("total 1,000", "last_number") == "1000"
    with pytest.raises(ValueError, match="last_number"):
        extract_answer("x", "bogus")


@pytest.mark.parametrize("answer, gold", [
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac{1}{2}"), ("1/2", "0.5"), ("0.5", "1/2"),
    ("\\frac{1}{2}", "1/2"), ("42", "42.0"), ("42.0", "42"), ("1,000", "1000"),
])
def test_equivalent_forms(accuracy, answer, gold):
    assert accuracy([f"so \\boxed{{{answer}}}"], answer=[gold]) == [1.0]
    assert answers_equivalent(answer, gold, timeout=TIMEOUT)


def test_assignment_matches_its_value(accuracy):
    # decided (and documented in rewards/math.py): "x=3" is the answer 3
    assert accuracy(["\\boxed{x=3}", "\\boxed{3}"], answer=["3", "x=3"]) == [1.0, 1.0]
    assert accuracy(["\\boxed{x=4}"], answer=["3"]) == [0.0]


def test_gold_forms_and_wrong_answers(accuracy):
    completions = ["\\boxed{5}", "\\boxed{5}", "\\boxed{6}", "\\boxed{\\frac{2}{3}}", "\\boxed{0.67}"]
    gold = ["\\boxed{5}", "$5$", "5", "\\frac{2}{3}", "\\frac{2}{3}"]
    assert accuracy(completions, answer=gold) == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_dapo_values(dapo):
    assert dapo(["\\boxed{2}", "\\boxed{3}", "nothing"], answer=["2", "2", "2"]) == [1.0, -1.0, -1.0]


def test_bad_inputs_score_wrong_within_time_limit(accuracy):
    completions = [
        "\\boxed{\\frac{1}{2",                       # unclosed brace
        "\\boxed{\\frac{}{}^^_\\sqrt[}",               # malformed LaTeX
        "",                                           # empty
        "\\boxed{7} and finally \\boxed{8}",          # several boxes: last wins
        f"\\boxed{{{HUGE}}}",                         # huge number as the answer
        "\\boxed{5}",                                 # huge number as the gold
        f"\\boxed{{{HUGE}}}",                         # huge vs huge: identical
        "x" * 1_000_000 + "\\boxed{9}",               # 1 MB completion
        "\udcff\ud800 surrogates \\boxed{3}",         # lone surrogates
        b"\xff\xfe not utf-8 \\boxed{3}",             # raw non-UTF-8 bytes
        None,                                         # not even text
    ]
    gold = ["1/2", "1", "1", "8", "5", HUGE, HUGE, "9", "3", "3", "3"]
    start = time.monotonic()
    scores = accuracy(completions, answer=gold)
    elapsed = time.monotonic() - start
    assert scores == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert elapsed < 3 * TIMEOUT + 2


def test_missing_answer_column(accuracy):
    with pytest.raises(ValueError, match="answer"):
        accuracy(["\\boxed{1}"])


def test_verify_batch_and_symmetry():
    assert verify_batch([("1/2", "0.5"), ("2", "3"), ("", "1"), ("\\frac{3}{4}", "\\boxed{0.75}")],
                        timeout=TIMEOUT, workers=2) == [True, False, False, True]
    assert answers_equivalent("\\frac{1}{2}", "1/2", timeout=TIMEOUT)
    assert not answers_equivalent("1/2", "1/3", timeout=TIMEOUT)


def test_stuck_worker_is_killed_and_replaced():
    # hard limit 0.5 s is below math-verify's 1 s signal timeout, so the parent must kill the worker
    with VerifierPool(workers=1, timeout=0.5) as pool:
        assert pool.verify([("1", "1.0")]) == [True]
        start = time.monotonic()
        assert pool.verify([(HUGE, "5"), ("1/2", "0.5"), ("2", "2.0")]) == [False, True, True]
        assert pool.restarts >= 1
        assert time.monotonic() - start < 30


def test_fast_paths_skip_the_workers():
    reward = AccuracyReward(timeout=TIMEOUT, workers=1)
    completions = ["\\boxed{ 42 }", "\\boxed{42.0}", "\\boxed{0.5}", "\\boxed{-\\dfrac{6}{8}}", "\\boxed{$7$.}"]
    assert reward(completions, answer=["42", "42", "\\frac{1}{2}", "-0.75", "7"]) == [1.0] * 5
    assert reward._pool._workers == []  # decided without sympy: no worker was ever started
    reward.close()
