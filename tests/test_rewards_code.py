"""Code reward: block extraction, test formats, fractions (docs/algorithms.md §7, code)."""

import json

import pytest

import rewards
from rewards.code import extract_code, outputs_match

DOUBLE = "```python\nprint(2 * int(input()))\n```"
CASES = [{"input": "1\n", "output": "2\n"}, {"input": "5", "output": "10"}, {"input": "7", "output": "15"}]


@pytest.fixture(scope="module")
def code_reward():
    return rewards.get("code", timeout=2.0, workers=2)


def test_extract_last_python_block():
    text = ("Try:\n```python\nx = 1\n```\nIn C:\n```cpp\nint main() {}\n```\n"
            "Final:\n```\nprint('last')\n```\nDone.")
    assert extract_code(text) == "print('last')"
    assert extract_code("```py\na = 1\nb = 2\n```") == "a = 1\nb = 2"
    assert extract_code("```python\nunclosed = True") is None
    assert extract_code("```cpp\nint x;\n```") is None
    assert extract_code("no code") is None


def test_outputs_match_ignores_trailing_whitespace():
    assert outputs_match("1 2  \n3\n\n", "1 2\n3")
    assert outputs_match("\n  a\r\nb\t\n", "  a\nb")
    assert not outputs_match("1 2", "1  2")
    assert not outputs_match("12", "1\n2")


def test_stdio_fraction_and_all_or_nothing(code_reward):
    strict = rewards.get("code", timeout=2.0, workers=2, all_or_nothing=True)
    completions = [DOUBLE, DOUBLE, "no code at all"]
    tests = [CASES, json.dumps(CASES), CASES]
    assert code_reward(completions, tests=tests) == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert strict(completions[:1], tests=tests[:1]) == [0.0]
    assert strict(completions[:1], tests=[CASES[:2]]) == [1.0]


def test_crash_in_one_case_does_not_fail_the_others(code_reward):
    program = ("```python\nimport ctypes, os\nn = int(input())\n"
               "if n == 0:\n    os.abort()\nif n == 1:\n    ctypes.string_at(0)  # segfault\nprint(n)\n```")
    cases = [{"input": "0", "output": "0"}, {"input": "1", "output": "1"}, {"input": "2", "output": "2"},
             {"input": "3", "output": "3"}]
    assert code_reward([program], tests=[cases]) == [0.5]


def test_test_code_string(code_reward):
    solution = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    asserts = "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
    check = "def check(candidate):\n    assert candidate(2, 2) == 4\n\ncheck(add)"
    apps = {"inputs": ["3"], "outputs": ["6"]}
    assert code_reward([solution, solution, wrong, DOUBLE], tests=[asserts, check, asserts, apps]) == [
        1.0, 1.0, 0.0, 1.0]


def test_early_exit_does_not_pass_the_tests(code_reward):
    exits = ["import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit"]
    completions = [f"```python\ndef add(a, b):\n    return 0\n{e}\n```" for e in exits]
    assert code_reward(completions, tests=["assert add(1, 2) == 3"] * 3) == [0.0, 0.0, 0.0]


def test_missing_or_empty_tests(code_reward):
    assert code_reward([DOUBLE, DOUBLE], tests=[[], None]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="tests"):
        code_reward([DOUBLE])
