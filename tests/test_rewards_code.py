"""Code reward: block extraction, test formats, output comparison, fractions, isolation opt-in
(docs/algorithms.md §7, code)."""

import json
import math
from decimal import Decimal

import pytest

import rewards
import rewards.sandbox
from pipeline.config import load_config
from pipeline.data.problems import DataError, load_problems
from pipeline.core.tracking import read_metrics
from rewards.code import TestSuite, extract_code, outputs_match, parse_tests, values_match
from canned_engine import CannedEngine

DOUBLE = "```python\nprint(2 * int(input()))\n```"
CASES = [{"input": "1\n", "output": "2\n"}, {"input": "5", "output": "10"}, {"input": "7", "output": "15"}]
ADD = "```python\ndef add(a, b):\n    return a + b\n```"


def _fence(code: str) -> str:
    return f"```python\n{code}\n```"


@pytest.fixture(scope="module")
def code_reward():
    """Scoring does not depend on the isolation level; these programs are harmless anywhere."""
    return rewards.get("code", timeout=2.0, workers=2, allow_unsandboxed=True)


@pytest.fixture
def no_namespaces(monkeypatch):
    """Simulate a machine where namespaces are unavailable (an unprivileged container)."""
    weaker = [level for level in rewards.sandbox.isolation_levels()
              if level.name not in rewards.sandbox.NAMESPACE_LEVELS]
    monkeypatch.setattr(rewards.sandbox, "isolation_levels", lambda: weaker)


# ---- extraction and comparison (no sandbox) ---------------------------------------------


def test_extract_last_python_block():
    text = ("Try:\n```python\nx = 1\n```\nIn C:\n```cpp\nint main() {}\n```\n"
            "Final:\n```\nprint('last')\n```\nDone.")
    assert extract_code(text) == "print('last')"
    assert extract_code("```py\na = 1\nb = 2\n```") == "a = 1\nb = 2"
    assert extract_code("```python\nunclosed = True") is None
    assert extract_code("```cpp\nint x;\n```") is None
    assert extract_code("no code") is None


def test_outputs_match_lines_and_tokens():
    assert outputs_match("1 2  \n3\n\n", "1 2\n3")
    assert outputs_match("\n  a\r\nb\t\n", "  a\nb")
    assert outputs_match("1  2", "1 2")  # token by token within a line
    assert not outputs_match("12", "1\n2")
    assert not outputs_match("1 2", "1\n2")  # lines still count
    assert not outputs_match("1 2 3", "1 2")


@pytest.mark.parametrize("actual, expected", [
    (str(1 / 3), "0.333333333333"),
    (str(0.1 + 0.2), "0.3"),
    ("1e-7", "1.0000001e-7"),
    ("1.0000001e-7", "1e-7"),
    ("3", "3.0"),  # the expected token is real: the printed integer is a number like any other
    ("2.0000005", "2.000000"),
    ("123456789.1", "123456789.0"),  # relative error 8e-10
    ("-0.0000005", "0.0"),
    ("0.5 0.25\n1", "0.5000001 0.2500000001\n1"),  # several tokens on a line
])
def test_real_tokens_match_within_tolerance(actual, expected):
    assert outputs_match(actual, expected)


@pytest.mark.parametrize("actual, expected", [
    ("3.0000001", "3"),  # integer tokens compare exactly
    ("3.0", "3"),
    ("4", "3"),
    ("0.333", "0.333333333333"),
    ("0.3334", "0.3333"),
    ("1e-5", "1e-6"),
    ("nan", "0.5"),
    ("0.5 0.25\n1", "0.5 0.25\n1.0 7"),
    ("0.50", "0.5x"),  # not a number: exact text
])
def test_other_tokens_must_be_equal(actual, expected):
    assert not outputs_match(actual, expected)


def test_exact_mode_compares_token_text():
    assert not outputs_match(str(1 / 3), "0.333333333333", float_tolerance=0)
    assert outputs_match("0.5  1", "0.5 1", float_tolerance=0)
    assert not outputs_match("1e-7", "1.0000001e-7", float_tolerance=0)


def test_values_match():
    assert values_match([1, [2, 3]], (1, (2, 3)))
    assert values_match({"a": [1.0000001]}, {"a": [1.0]})
    assert values_match(3, 3.0) and values_match(0.30000000000000004, 0.3)
    assert not values_match(3.0000001, 3)
    assert not values_match(True, 1) and not values_match(1, True)
    assert not values_match([1, 2], [1, 2, 3]) and not values_match("1", 1)
    assert not values_match(0.30000000000000004, 0.3, float_tolerance=0)


# ---- test formats -----------------------------------------------------------------------


def test_parse_tests_formats():
    call = {"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [3, 7]}
    assert parse_tests(call) == TestSuite("call", ([1, 2], [3, 4]), (3, 7), "add")
    assert parse_tests(json.dumps(call)) == parse_tests(call)
    lines = {"inputs": [["2", "3 4"], "5\n"], "outputs": [["7", "12"], 5]}
    assert parse_tests(lines) == TestSuite("stdio", ("2\n3 4\n", "5\n"), ("7\n12", "5"))
    assert parse_tests([{"input": ["1", "2"], "output": "3"}]).inputs == ("1\n2\n",)
    assert parse_tests({"language": "python", "test_cases": [{"input": "1", "output": "2",
                                                              "type": "stdin_stdout"}]}).kind == "stdio"
    assert parse_tests(["assert f(1) == 2", "assert f(2) == 4"]).kind == "code"
    assert parse_tests("assert f(1) == 2") == TestSuite("code", ("assert f(1) == 2",))
    assert parse_tests(None).kind == "none" and not parse_tests(None)
    big = '{"fn_name": "f", "inputs": [[1]], "outputs": [' + "9" * 5000 + "]}"
    assert parse_tests(big).outputs == (10 ** 5000 - 1,)


@pytest.mark.parametrize("value, message", [
    ({"fn_name": "add", "inputs": [[1, 2]], "outputs": [3, 7]}, "1 items but 'outputs' has 2"),
    ({"fn_name": "add", "inputs": [1, 2], "outputs": [3, 7]}, "list of arguments"),
    ({"fn_name": "not a name", "inputs": [[1]], "outputs": [1]}, "fn_name"),
    ({"input": "1", "output": "2"}, "'inputs' and 'outputs'"),
    ({"inputs": [], "outputs": []}, "empty"),
    ([], "empty"),
    ([{"input": "1"}], "item 0 is dict with keys"),
    ([1, 2], "item 0 is int"),
    ('[{"inputs": "1"}]', "item 0 is dict"),
    ("{not json, not python", "neither JSON test cases nor valid Python"),
    ("", "non-empty"),
    (42, "type int"),
    ({"language": "cpp", "test_cases": []}, "only Python"),
    ([{"input": "1", "output": "2", "type": "function_call"}], "function_call"),
    ({"inputs": [{"a": 1}], "outputs": ["1"]}, "input 0 must be a string or a list of lines"),
])
def test_unknown_formats_are_rejected_with_the_reason(value, message):
    with pytest.raises(ValueError, match=message):
        parse_tests(value)


def test_malformed_tests_fail_when_the_data_loads(tmp_path):
    rows = [{"problem": "add", "answer": "-", "tests": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}},
            {"problem": "math", "answer": "4"},
            {"problem": "add", "answer": "-", "tests": json.dumps([{"in": "1", "out": "2"}])}]
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"code.jsonl, line 3: column 'tests': .*item 0 is dict with keys \['in'"):
        load_problems(str(path))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    assert [p.extra.get("tests") for p in load_problems(str(path))] == [rows[0]["tests"], None]


# ---- scoring in the sandbox -------------------------------------------------------------


def test_stdio_fraction_and_all_or_nothing(code_reward):
    strict = rewards.get("code", timeout=2.0, workers=2, all_or_nothing=True, allow_unsandboxed=True)
    completions = [DOUBLE, DOUBLE, "no code at all"]
    tests = [CASES, json.dumps(CASES), CASES]
    assert code_reward(completions, tests=tests) == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert strict(completions[:1], tests=tests[:1]) == [0.0]
    assert strict(completions[:1], tests=[CASES[:2]]) == [1.0]


def test_huge_integers_are_printed_and_read(code_reward):
    digits = _fence("print(len(str(10 ** int(input()))))")
    power = _fence("print(2 ** 20000)")
    echo = _fence("n = int(input())\nprint(n + 1)")
    assert code_reward([digits, power, echo], tests=[
        [{"input": "5000", "output": "5001"}],
        [{"input": "", "output": str(Decimal(2 ** 20000))}],  # str(int) is limited in this process
        [{"input": "9" * 6000, "output": "1" + "0" * 6000}]]) == [1.0, 1.0, 1.0]
    power_of_ten = _fence("def f(n):\n    return 10 ** n")
    call = '{"fn_name": "f", "inputs": [[6000], [5]], "outputs": [1' + "0" * 6000 + ', 1000]}'
    assert code_reward([power_of_ten], tests=[call]) == [0.5]


def test_call_based_tests(code_reward):
    example = {"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [3, 7]}
    wrapped = {"fn_name": "add", "inputs": [[1, 2], [[1], [2, 3]]], "outputs": [[3], [[1, 2, 3]]]}
    pairs = _fence("def pairs(xs):\n    return [(x, x * x) for x in xs]")
    nested = {"fn_name": "pairs", "inputs": [[[1, 2]], [[]]], "outputs": [[[1, 1], [2, 4]], []]}
    leetcode = _fence("class Solution:\n    def twoSum(self, nums, target):\n"
                      "        seen = {}\n        for i, x in enumerate(nums):\n"
                      "            if target - x in seen:\n                return [seen[target - x], i]\n"
                      "            seen[x] = i")
    two_sum = {"fn_name": "twoSum", "inputs": [[[2, 7, 11, 15], 9], [[3, 2, 4], 6]], "outputs": [[[0, 1]], [1, 2]]}
    mean = _fence("def mean(xs):\n    return sum(xs) / len(xs)")
    means = {"fn_name": "mean", "inputs": [[[1, 2]], [[1, 1, 2]]], "outputs": [1.5, 1.333333333]}
    tests = [example, json.dumps(wrapped), nested, two_sum, means]
    assert code_reward([ADD, ADD, pairs, leetcode, mean], tests=tests) == [1.0, 1.0, 1.0, 1.0, 1.0]


def test_call_based_failures_score_zero(code_reward):
    example = {"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [3, 7]}
    wrong = _fence("def add(a, b):\n    return a - b")
    printing = _fence("def add(a, b):\n    print(a + b)")
    exiting = _fence("import os\ndef add(a, b):\n    os._exit(0)")  # before returning: no value
    renamed = _fence("def plus(a, b):\n    return a + b")
    crashes_once = _fence("def add(a, b):\n    assert a != 3\n    return a + b")
    stdin_style = _fence("a, b = map(int, input().split())\nprint(a + b)")
    assert code_reward([wrong, printing, exiting, renamed, crashes_once, stdin_style], tests=[example] * 6) == [
        0.0, 0.0, 0.0, 0.0, 0.5, 0.0]


def test_real_number_output(code_reward):
    exact = rewards.get("code", timeout=2.0, workers=2, float_tolerance=0, allow_unsandboxed=True)
    third, sum_ = _fence("print(1/3)"), _fence("print(0.1 + 0.2)")
    tests = [[{"input": "", "output": "0.333333333333"}], [{"input": "", "output": "0.3"}]]
    assert code_reward([third, sum_], tests=tests) == [1.0, 1.0]
    assert exact([third, sum_], tests=tests) == [0.0, 0.0]
    assert code_reward([_fence("print(3.0000001)")], tests=[[{"input": "", "output": "3"}]]) == [0.0]
    with pytest.raises(ValueError, match="float_tolerance"):
        rewards.get("code", float_tolerance=-1.0, allow_unsandboxed=True)
    assert math.isclose(code_reward.float_tolerance, 1e-6)


def test_list_of_lines_stdio(code_reward):
    program = _fence("n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs))\nprint(max(xs))")
    tests = {"inputs": [["3", "1 2 3"], ["2", "5 -1"]], "outputs": [["6", "3"], ["4", "5"]]}
    assert code_reward([program], tests=[tests]) == [1.0]


def test_crash_in_one_case_does_not_fail_the_others(code_reward):
    program = ("```python\nimport ctypes, os\nn = int(input())\n"
               "if n == 0:\n    os.abort()\nif n == 1:\n    ctypes.string_at(0)  # segfault\nprint(n)\n```")
    cases = [{"input": "0", "output": "0"}, {"input": "1", "output": "1"}, {"input": "2", "output": "2"},
             {"input": "3", "output": "3"}]
    assert code_reward([program], tests=[cases]) == [0.5]


def test_test_code_string(code_reward):
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    asserts = "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
    check = "def check(candidate):\n    assert candidate(2, 2) == 4\n\ncheck(add)"
    apps = {"inputs": ["3"], "outputs": ["6"]}
    mbpp = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(2, 2) == 5"]
    scores = code_reward([ADD, ADD, wrong, DOUBLE, ADD], tests=[asserts, check, asserts, apps, mbpp])
    assert scores == pytest.approx([1.0, 1.0, 0.0, 1.0, 2 / 3])


def test_early_exit_does_not_pass_the_tests(code_reward):
    exits = ["import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit"]
    completions = [f"```python\ndef add(a, b):\n    return 0\n{e}\n```" for e in exits]
    assert code_reward(completions, tests=["assert add(1, 2) == 3"] * 3) == [0.0, 0.0, 0.0]


def test_missing_tests(code_reward):
    assert code_reward([DOUBLE], tests=[None]) == [0.0]
    with pytest.raises(TypeError, match="tests"):  # a required column: the scorer checks data for it
        code_reward([DOUBLE])
    with pytest.raises(ValueError, match="'inputs' and 'outputs'"):
        code_reward([DOUBLE], tests=[{"cases": []}])  # never a silent 0 for an unknown format


# ---- isolation ----------------------------------------------------------------------------


def test_sandbox_level_is_recorded(code_reward):
    assert code_reward.sandbox_level == rewards.sandbox.Sandbox().isolation.name
    assert code_reward.run_info == {"sandbox/level": code_reward.sandbox_level}
    scorer = rewards.RewardScorer([{"name": "code", "params": {"allow_unsandboxed": True}}, {"name": "format"}])
    assert scorer.run_info() == {"sandbox/level": code_reward.sandbox_level}
    scorer.close()


def test_refuses_to_start_without_namespaces(no_namespaces):
    with pytest.raises(ValueError, match="allow_unsandboxed: true"):
        rewards.get("code", timeout=2.0)
    with pytest.raises(ValueError, match="allow_unsandboxed"):
        rewards.RewardScorer([{"name": "code"}])


def test_unsandboxed_opt_in(no_namespaces, caplog):
    reward = rewards.get("code", timeout=2.0, workers=1, allow_unsandboxed=True)
    assert reward.sandbox_level not in rewards.sandbox.NAMESPACE_LEVELS
    assert reward.run_info == {"sandbox/level": reward.sandbox_level}
    assert reward([ADD], tests=[{"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}]) == [1.0]
    assert "weak isolation" in caplog.text


# ---- in the RL stage ------------------------------------------------------------------------




def _code_config(tiny_model_dir, tmp_path, code_params="{timeout: 2.0}"):
    path = tmp_path / "code.jsonl"
    rows = [{"problem": f"Read n and print 2n ({i}).", "answer": "-",
             "tests": [{"input": str(i), "output": str(2 * i)}]} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_config(None, [
        f"model.name={tiny_model_dir}", f"output_dir={tmp_path}", f"data.train={path}", f"data.test={path}",
        "rl.steps=1", "rl.prompts_per_step=2", "rl.group_size=2", "rl.mini_batch_size=4", "rl.micro_batch_size=4",
        "rl.eval_every=0", "rollout.max_tokens=8", "reward.workers=1", "rl.bf16_autocast=false",
        f"reward.terms=[{{name: code, params: {code_params}}}]"])


@pytest.mark.slow
def test_first_metrics_record_carries_the_sandbox_level(tiny_model_dir, tmp_path):
    from pipeline.rl.trainer import Trainer

    config = _code_config(tiny_model_dir, tmp_path, "{timeout: 2.0, allow_unsandboxed: true}")
    trainer = Trainer(config, engine=CannedEngine(lambda j: DOUBLE if j % 2 else "no code"))
    trainer.run()
    trainer.close()
    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert records[0]["sandbox/level"] == rewards.sandbox.Sandbox().isolation.name
    assert records[0]["reward/mean"] == 0.5
    assert all("sandbox/level" not in r for r in records[1:])


def test_weak_isolation_refuses_before_the_model_loads(tiny_model_dir, tmp_path, no_namespaces, monkeypatch):
    import pipeline.learner.learner
    from pipeline.rl.trainer import Trainer

    monkeypatch.setattr(pipeline.learner.learner, "load_policy", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match="allow_unsandboxed"):
        Trainer(_code_config(tiny_model_dir, tmp_path), engine=CannedEngine(lambda j: DOUBLE if j % 2 else "no code"))


def test_a_hostile_return_value_scores_zero(code_reward):
    deep = _fence("import sys\nsys.setrecursionlimit(100000)\ndef add(a, b):\n    x = []\n"
                  "    for _ in range(5000):\n        x = [x]\n    return x")
    assert code_reward([deep], tests=[{"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}]) == [0.0]
