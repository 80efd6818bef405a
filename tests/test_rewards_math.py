"""Math accuracy reward: extraction, equivalence, bad input, time limits (docs/algorithms.md §7)."""

import json
import time

import pytest

from pipeline.data.problems import load_problems
from rewards.extract import answer_boxes, extract_answer, join_digit_groups, repair_answer
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
    assert extract_answer("<answer>\n 333 \n</answer>\n</answer>", "answer_tag") == "333"  # up to the next close
    assert extract_answer("<answer>1</answer> then <answer>2", "answer_tag") is None  # last one never closed
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
    completions = ["\\boxed{5}", "\\boxed{5}", "\\boxed{6}", "\\boxed{\\frac{2}{3}}", "\\boxed{0.66}"]
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


# ---- issue 14 §2: the four kinds of wrong equivalence (docs/rewards.md, accuracy) ----------


@pytest.mark.parametrize("answer, gold, expected", [
    ("0.0000001", "0.0000002", 0.0),                        # issue: absolute rounding to 6 places
    ("\\frac{1}{2^{98}}", "\\frac{1}{2^{99}}", 0.0),          # issue: 15-digit evalf chopped the difference
    ("0.33", "\\frac{1}{3}", 1.0),                          # issue: decimal to its written precision
    ("0.125", "\\frac{1}{8}", 1.0),                         # issue
    ("\\frac{1}{3}", "0.33", 1.0),                          # symmetric
    ("0.67", "\\frac{2}{3}", 1.0), ("0.66", "\\frac{2}{3}", 0.0),  # rounded, not truncated
    ("0.3333", "\\frac{1}{3}", 1.0), ("0.3334", "\\frac{1}{3}", 0.0),
    ("3.14", "\\pi", 1.0), ("3.15", "\\pi", 0.0), ("2\\pi", "6.28", 1.0),
    ("-0.33", "-\\frac{1}{3}", 1.0), ("0.000012", "0.000013", 0.0), ("0.0000001", "0", 0.0),
    ("2^{-30}", "2^{-31}", 0.0), ("\\frac{1}{10^{8}}", "\\frac{1}{10^{9}}", 0.0),
    ("\\frac{x}{2^{98}}", "\\frac{x}{2^{99}}", 0.0),          # exact inside expressions too
    ("\\{0.1, 0.2\\}", "\\{0.1, 0.3\\}", 0.0),               # and inside sets
    ("1000001", "1000000", 0.0), ("10^{20}+1", "10^{20}", 0.0),  # different integers never equal
    ("1000000.4", "1000000", 0.0),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", 1.0),      # exact forms still equal when equal
    ("\\sqrt{3+2\\sqrt{2}}", "1+\\sqrt{2}", 1.0), ("0.5x", "\\frac{x}{2}", 1.0),
    ("\\frac{1}{2^{98}}", "2^{-98}", 1.0), ("\\sqrt{8}", "2\\sqrt{2}", 1.0), ("\\pi", "\\frac{22}{7}", 0.0),
    ("1.0000001", "1", 0.0), ("0.5", "0.50", 1.0),
    # fewer digits never earn credit: the gold's written precision decides, zeros round nothing away
    ("0.0", "0.04", 0.0), ("0.0", "\\frac{1}{36}", 0.0), ("0.00", "10^{-3}", 0.0), ("0.0", "e^{-5}", 0.0),
    ("0.1", "0.123456", 0.0), ("1.0", "0.95", 0.0), ("0.00", "0.001", 0.0), ("0.3", "0.34", 0.0),
    ("0.03", "\\frac{1}{36}", 1.0), ("0.0", "0", 1.0), ("0.123456", "0.123456", 1.0),
])
def test_tolerance_is_the_written_precision(accuracy, answer, gold, expected):
    assert accuracy([f"So the answer is $\\boxed{{{answer}}}$."], answer=[gold]) == [expected]


@pytest.mark.parametrize("answer, gold, expected", [
    ("4\\sqrt(2)", "4", 0.0),                  # issue: the parser kept "4" and dropped the rest
    ("4\\sqrt(2)", "4\\sqrt{2}", 1.0),         # repaired: \sqrt(x) is \sqrt{x}
    ("2\\sqrt(3)x", "2", 0.0), ("2\\sqrt(3)x", "2\\sqrt{3}x", 1.0),
    ("\\sqrt[3](8)", "2", 1.0), ("\\sqrt 2", "\\sqrt{2}", 1.0),
    ("3 )", "3", 0.0), ("2+", "2", 0.0), ("5]", "5", 0.0), ("2 \\& 3", "3", 0.0),  # not repairable: wrong
])
def test_half_parsed_answers_are_repaired_or_wrong(accuracy, answer, gold, expected):
    assert accuracy([f"\\boxed{{{answer}}}"], answer=[gold]) == [expected]


def test_sqrt_repair_keeps_nested_parentheses():
    assert repair_answer("\\sqrt[3](x+(1))") == "\\sqrt[3]{x+(1)}"
    assert repair_answer("\\sqrt (2)+\\sqrt(3)") == "\\sqrt{2}+\\sqrt{3}"
    assert repair_answer("\\sqrt(2") == "\\sqrt(2"  # unbalanced: left for the verifier to reject


@pytest.mark.parametrize("answer, gold, expected", [
    ("10\\,000", "10000", 1.0), ("10\\,000", "0", 0.0),           # issue: \, read as a product
    ("1\\,234\\,567", "1234567", 1.0), ("1\\,234\\,567", "802", 0.0),
    ("10{,}000", "10000", 1.0), ("10\\ 000", "10000", 1.0), ("10\\;000", "10000", 1.0),
    ("12 345", "12345", 1.0), ("-25\\,000.5", "-25000.5", 1.0), ("10\\,000", "10\\,000", 1.0),
])
def test_digit_group_spacing(accuracy, answer, gold, expected):
    assert accuracy([f"\\boxed{{{answer}}}"], answer=[gold]) == [expected]


@pytest.mark.parametrize("text, expected", [
    ("10\\,000", "10000"), ("1\\,234\\,567", "1234567"), ("1{,}234{,}567", "1234567"),
    ("10\u2009000", "10000"), ("1\\,234\\,5678", "1\\,234\\,5678"),  # not groups of three: unchanged
    ("3.141\\,592", "3.141\\,592"), ("2, 345", "2, 345"), ("x = 1\\,000", "x = 1000"),
])
def test_join_digit_groups(text, expected):
    assert join_digit_groups(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("So we need 10 000 bricks", "10000"),            # issue: was "000"
    ("The total is 1\\,234\\,567.", "1234567"), ("about 12\\,500 people", "12500"),
    ("costs 2,500 dollars", "2500"), ("from 3 to 4", "4"), ("in 2023 100 people came", "100"),
])
def test_last_number_reads_digit_groups(text, expected):
    assert extract_answer(text, "last_number") == expected


@pytest.mark.parametrize("text, expected", [
    ("$x=\\boxed{2}$ and $y=\\boxed{3}$", "2, 3"),             # issue
    ("$\\boxed{2}$, $\\boxed{3}$", "2, 3"),
    ("\\boxed{2} \\text{ and } \\boxed{3}", "2, 3"),
    ("$a = \\boxed{1}$, $b_1 = \\boxed{2}$, and $\\theta = \\boxed{3}$", "1, 2, 3"),
    ("\\boxed{x=2}; \\boxed{y=3}", "x=2, y=3"),
    ("\\begin{align} x &= \\boxed{2} \\\\ y &= \\boxed{3} \\end{align}", "2, 3"),
    ("$\\boxed{2}$ or $\\boxed{-2}$", "2, -2"),
    ("\\boxed{7} and finally \\boxed{8}", "8"),                # reasoning text between: self-correction
    ("Maybe \\boxed{4}, no: \\boxed{5}", "5"),
    ("So $x=\\boxed{2}$. Checking again, the value is $x=\\boxed{3}$.", "3"),
    ("\\boxed{\\boxed{1}}", "1"),
])
def test_adjacent_boxes_form_one_answer(text, expected):
    assert extract_answer(text) == expected


def test_answer_boxes_spans_and_counts():
    text = "Thus $x=\\boxed{2}$ and $y=\\boxed{3}$."
    assert answer_boxes(text) == [(("2, 3"), text.index("\\boxed"), text.rindex("}") + 1)]
    assert [box.content for box in answer_boxes("\\boxed{1} wait, that is wrong: \\boxed{2}")] == ["1", "2"]
    assert answer_boxes("\\boxed{1} and \\boxed{2") is None  # unclosed last box: no answer
    assert answer_boxes("no box") == []


@pytest.mark.parametrize("completion, gold, expected", [
    ("$x=\\boxed{2}$ and $y=\\boxed{3}$", "2, 3", 1.0),        # issue
    ("$x=\\boxed{2}$ and $y=\\boxed{3}$", "x=2, y=3", 1.0),
    ("\\boxed{3}, \\boxed{4}", "(3, 4)", 1.0), ("\\boxed{3}, \\boxed{4}", "\\{3, 4\\}", 1.0),
    ("\\boxed{3}, \\boxed{4}", "3, 4", 1.0), ("\\boxed{3}, \\boxed{5}", "3, 4", 0.0),
    ("$x=\\boxed{2}$ and $y=\\boxed{3}$", "3", 0.0),           # one answer "2, 3", not its last part
    ("I first got \\boxed{2}, but rechecking the sum gives \\boxed{3}", "3", 1.0),
])
def test_several_boxes_scored_as_one_answer(accuracy, completion, gold, expected):
    assert accuracy([completion], answer=[gold]) == [expected]


def test_gold_from_solution_uses_the_same_scanner(tmp_path, accuracy):
    # issue 16 item 4: MATH-style gold comes from the solution's boxes, read as completions are
    rows = [{"problem": "Solve.", "solution": "So $x=\\boxed{2}$ and $y=\\boxed{3}$."},
            {"problem": "Count.", "solution": "Total: \\boxed{\\boxed{10\\,000}}"}]
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    golds = [p.answer for p in load_problems(str(path), preset="math")]
    assert golds == ["2, 3", "10\\,000"]
    assert golds == [extract_answer(row["solution"]) for row in rows]
    assert accuracy(["$x=\\boxed{2}$, $y=\\boxed{3}$", "\\boxed{10000}"], answer=golds) == [1.0, 1.0]
