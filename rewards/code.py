"""Code-execution reward (docs/algorithms.md §7, code): fraction of unit tests passed in a sandbox.

The program is the last fenced Python block of the completion (```python ... ```
or a bare ``` ... ``` fence). ``parse_tests`` reads a ``tests`` item (a JSON
string of any of these is read the same way) as

* Python test code: a string run after the solution in the same program
  (asserts, or a ``check`` function and its call), or a list of such strings
  (MBPP's ``test_list``); each passes only if it runs to its end;
* stdin/stdout cases: a list of ``{"input", "output"}`` objects, APPS/TACO's
  ``{"inputs": [...], "outputs": [...]}`` without ``fn_name``, or open-r1's
  ``{"test_cases": [...]}``; an input or output may be a list of lines;
* call-based cases (APPS/TACO/verl): ``{"fn_name", "inputs", "outputs"}``; each
  input is the argument list of one call of ``fn_name`` (or of
  ``Solution().fn_name``), compared with its output as a value (``values_match``).

Anything else raises ``ValueError`` when the data loads (``pipeline.data.problems`` calls
``parse_tests`` on every row with a ``tests`` column). Printed output is compared
line by line and token by token (``outputs_match``): real-number tokens within
``float_tolerance``, everything else exactly. Completions are scored in parallel
with threads; the work happens in the sandbox processes (``rewards.sandbox``),
which refuse to run below namespace isolation unless ``allow_unsandboxed``.
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Sequence

from rewards.extract import as_text
from rewards.messages import completion_texts
from rewards.registry import register
from rewards.sandbox import NAMESPACE_LEVELS, Sandbox
from rewards.verifier_pool import default_workers

__all__ = ["CodeReward", "TestSuite", "code", "extract_code", "outputs_match", "parse_tests", "values_match"]

logger = logging.getLogger(__name__)

MAX_CODE_CHARS = 100_000
FLOAT_TOLERANCE = 1e-6
_PYTHON_TAGS = ("", "python", "py", "python3")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT_DIGITS = 4000  # below CPython's default int/str limit (4300 digits)


def extract_code(text: str) -> str | None:
    """The last closed fenced block tagged ``python``/``py``/``python3`` or untagged; ``None`` if none."""
    blocks, body, tag = [], None, ""
    for line in as_text(text).splitlines():
        fence = line.strip()
        if body is None:
            if fence.startswith("```"):
                body, tag = [], fence.strip("`").strip().lower()
        elif fence.startswith("```") and not fence.strip("`"):
            if tag in _PYTHON_TAGS:
                blocks.append("\n".join(body))
            body = None
        else:
            body.append(line)
    return blocks[-1] if blocks else None


# ---- comparing results -----------------------------------------------------------------


def _reals_match(actual: float, expected: float, tolerance: float) -> bool:
    """Absolute or relative error within ``tolerance`` (the judges' rule, e.g. testlib's doubleCompare)."""
    return abs(actual - expected) <= tolerance * max(1.0, abs(expected))


def _tokens_match(actual: str, expected: str, tolerance: float) -> bool:
    if actual == expected:
        return True
    is_real = _NUMBER.fullmatch(expected) and any(c in expected for c in ".eE")
    return bool(tolerance > 0 and is_real and _NUMBER.fullmatch(actual)
                and _reals_match(float(actual), float(expected), tolerance))


def outputs_match(actual: str, expected: str, float_tolerance: float = FLOAT_TOLERANCE) -> bool:
    """Printed output against the expected one, line by line after stripping both, and token by
    token (split on whitespace) within a line. A token whose expected form is a real number (a
    decimal point or an exponent) matches a number within ``float_tolerance`` absolute or relative
    error; every other token (integers included) must be equal. ``float_tolerance=0``: exact tokens."""
    actual_lines, expected_lines = actual.strip().splitlines(), expected.strip().splitlines()
    if len(actual_lines) != len(expected_lines):
        return False
    for actual_line, expected_line in zip(actual_lines, expected_lines):
        actual_tokens, expected_tokens = actual_line.split(), expected_line.split()
        if len(actual_tokens) != len(expected_tokens) or not all(
                _tokens_match(a, e, float_tolerance) for a, e in zip(actual_tokens, expected_tokens)):
            return False
    return True


def values_match(actual: Any, expected: Any, float_tolerance: float = FLOAT_TOLERANCE) -> bool:
    """A call's return value against the expected one, recursively: lists and tuples alike, dicts
    by keys; an expected float matches a number within ``float_tolerance`` (0: exactly); bools
    only match bools; anything else by ``==`` (so an expected integer must be met exactly)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, float) and isinstance(actual, (int, float)) and float_tolerance > 0:
        return _reals_match(float(actual), expected, float_tolerance)
    if isinstance(expected, (list, tuple)):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(values_match(a, e, float_tolerance) for a, e in zip(actual, expected)))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(values_match(actual[k], expected[k], float_tolerance) for k in expected))
    return actual == expected


def _call_matches(actual: Any, expected: Any, float_tolerance: float) -> bool:
    """APPS quirk: an expected output is often wrapped in a one-element list."""
    return values_match(actual, expected, float_tolerance) or (
        isinstance(expected, (list, tuple)) and len(expected) == 1
        and values_match(actual, expected[0], float_tolerance))


# ---- reading tests ---------------------------------------------------------------------


@dataclass(frozen=True)
class TestSuite:
    """The tests of one problem. ``kind``: ``none`` (the row has no tests), ``code`` (``inputs``:
    Python test programs), ``stdio`` (``inputs``/``outputs``: stdin and expected stdout texts) or
    ``call`` (``inputs``: argument lists of ``fn_name``; ``outputs``: expected return values)."""

    __test__ = False  # not a pytest test class

    kind: Literal["none", "code", "stdio", "call"]
    inputs: tuple[Any, ...] = ()
    outputs: tuple[Any, ...] = ()
    fn_name: str | None = None

    def __len__(self) -> int:
        return len(self.inputs)


def _parse_int(text: str) -> int:
    """``int(text)`` without CPython's int/str digit limit (judges' answers can be longer)."""
    return int(text) if len(text) < _INT_DIGITS else int(Decimal(text))


def _loads(text: str) -> Any:
    return json.loads(text, parse_int=_parse_int)


def _text(value: Any, what: str, final_newline: bool) -> str:
    """Stdin/stdout text: a string, a number, or a list of lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(line, (str, int, float)) for line in value):
        return "\n".join(map(str, value)) + ("\n" if final_newline and value else "")
    raise ValueError(f"{what} must be a string or a list of lines, not {type(value).__name__}")


def _test_program(text: Any, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a non-empty string of Python test code")
    try:
        compile(text, "tests.py", "exec")
    except SyntaxError as exc:
        raise ValueError(f"{what} is neither JSON test cases nor valid Python "
                         f"(line {exc.lineno}: {exc.msg})") from None
    return text


def _from_object(value: dict[str, Any]) -> TestSuite:
    if "test_cases" in value:  # open-r1's verification_info
        if str(value.get("language", "python")).lower() not in _PYTHON_TAGS:
            raise ValueError(f"tests for language {value['language']!r} cannot run; only Python is supported")
        return _from_list(value["test_cases"])
    if not {"inputs", "outputs"} <= set(value):
        raise ValueError(f"a tests object needs 'inputs' and 'outputs' (APPS/TACO format, plus 'fn_name' "
                         f"for call-based tests) or 'test_cases'; got keys {sorted(value)}")
    inputs, outputs, fn_name = value["inputs"], value["outputs"], value.get("fn_name")
    if not isinstance(inputs, (list, tuple)) or not isinstance(outputs, (list, tuple)):
        raise ValueError("'inputs' and 'outputs' must be lists")
    if len(inputs) != len(outputs):
        raise ValueError(f"'inputs' has {len(inputs)} items but 'outputs' has {len(outputs)}")
    if not inputs:
        raise ValueError("'inputs' and 'outputs' are empty: no test cases")
    if fn_name is None:
        return TestSuite("stdio", tuple(_text(x, f"input {i}", True) for i, x in enumerate(inputs)),
                         tuple(_text(y, f"output {i}", False) for i, y in enumerate(outputs)))
    if not isinstance(fn_name, str) or not fn_name.isidentifier():
        raise ValueError(f"'fn_name' must be a Python function name, not {fn_name!r}")
    for i, args in enumerate(inputs):
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"call-based input {i} must be the list of arguments of {fn_name}(), "
                             f"not {type(args).__name__}")
    return TestSuite("call", tuple(list(args) for args in inputs), tuple(outputs), fn_name)


def _from_list(value: Sequence[Any]) -> TestSuite:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("the list of tests is empty" if isinstance(value, (list, tuple))
                         else f"'test_cases' must be a list, not {type(value).__name__}")
    if all(isinstance(item, str) for item in value):
        return TestSuite("code", tuple(_test_program(t, f"test {i}") for i, t in enumerate(value)))
    for i, case in enumerate(value):
        if not isinstance(case, dict) or not {"input", "output"} <= set(case):
            raise ValueError(f"a list of tests must hold {{'input', 'output'}} objects or Python test "
                             f"strings; item {i} is {type(case).__name__}"
                             + (f" with keys {sorted(case)}" if isinstance(case, dict) else ""))
        if case.get("type", "stdin_stdout") != "stdin_stdout":
            raise ValueError(f"test case {i} has type {case['type']!r}; only 'stdin_stdout' cases are "
                             f"supported in a list (call-based tests: {{'fn_name', 'inputs', 'outputs'}})")
    return TestSuite("stdio", tuple(_text(c["input"], f"input {i}", True) for i, c in enumerate(value)),
                     tuple(_text(c["output"], f"output {i}", False) for i, c in enumerate(value)))


def parse_tests(value: Any) -> TestSuite:
    """Read one ``tests`` item in any of the formats listed in the module docstring.

    ``None`` gives a ``none`` suite (a row that is not a code problem). Raises ``ValueError``
    naming the format problem for anything else not understood (an empty test list, a JSON
    string of an unknown layout, test code that does not compile, ...).
    """
    if isinstance(value, TestSuite):
        return value
    if value is None:
        return TestSuite("none")
    if isinstance(value, str):
        if value.lstrip()[:1] in ("[", "{"):
            try:
                decoded = _loads(value)
            except json.JSONDecodeError:
                decoded = None  # may still be Python test code
            if decoded is not None:
                return parse_tests(decoded)
        return TestSuite("code", (_test_program(value, "the tests string"),))
    if isinstance(value, dict):
        return _from_object(value)
    if isinstance(value, (list, tuple)):
        return _from_list(value)
    raise ValueError(f"tests of type {type(value).__name__} are not understood; use Python test code, "
                     f"a list of {{'input', 'output'}} cases or {{'inputs', 'outputs'[, 'fn_name']}}")


# ---- the reward ------------------------------------------------------------------------


class CodeReward:
    """Fraction of tests passed (or 1/0 with ``all_or_nothing``); 0 without a code block or tests.

    ``sandbox_level`` is the isolation level in use, found when the reward is built; below
    ``NAMESPACE_LEVELS`` construction raises ``ValueError`` unless ``allow_unsandboxed``.
    ``run_info`` (``{"sandbox/level": ...}``) goes into the run's first metrics record.
    """

    def __init__(self, timeout: float = 5.0, total_timeout: float = 30.0, memory_mb: int = 1024,
                 all_or_nothing: bool = False, float_tolerance: float = FLOAT_TOLERANCE,
                 allow_unsandboxed: bool = False, workers: int | None = None) -> None:
        if not float_tolerance >= 0:
            raise ValueError(f"float_tolerance must be >= 0 (0: exact tokens), got {float_tolerance}")
        self.sandbox = Sandbox(timeout=timeout, total_timeout=total_timeout, memory_mb=memory_mb)
        self.sandbox_level = self.sandbox.isolation.name
        if self.sandbox_level not in NAMESPACE_LEVELS:
            if not allow_unsandboxed:
                raise ValueError(
                    f"code reward: the sandbox here only reaches isolation level {self.sandbox_level!r} "
                    f"(no {' / '.join(NAMESPACE_LEVELS)} namespaces), so generated code would run with the "
                    f"trainer's files and network; give the code reward the parameter "
                    f"allow_unsandboxed: true to run it anyway")
            logger.warning("code reward: running untrusted code with weak isolation %r (allow_unsandboxed)",
                           self.sandbox_level)
        else:
            logger.info("code reward: sandbox isolation level %r", self.sandbox_level)
        self.run_info = {"sandbox/level": self.sandbox_level}
        self.all_or_nothing = all_or_nothing
        self.float_tolerance = float(float_tolerance)
        self.workers = workers or default_workers()

    def _passed(self, program: str, suite: TestSuite) -> int:
        if suite.kind == "code":
            return sum(run.ok for run in self.sandbox.run(program, test_code=suite.inputs))
        if suite.kind == "stdio":
            runs = self.sandbox.run(program, inputs=suite.inputs)
            return sum(run.ok and outputs_match(run.stdout, expected, self.float_tolerance)
                       for run, expected in zip(runs, suite.outputs))
        runs = self.sandbox.run(program, call=(suite.fn_name, suite.inputs))
        passed = 0
        for run, expected in zip(runs, suite.outputs):
            try:
                passed += run.ok and _call_matches(_loads(run.value), expected, self.float_tolerance)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
                pass
        return passed

    def score(self, completion: Any, tests: Any) -> float:
        """Reward of one completion against its tests (raw or a parsed ``TestSuite``)."""
        suite = parse_tests(tests)
        program = extract_code(completion)
        if not program or len(program) > MAX_CODE_CHARS or not suite:
            return 0.0
        passed = self._passed(program, suite)
        if self.all_or_nothing:
            return float(passed == len(suite))
        return passed / len(suite)

    def __call__(self, completions: list[Any], tests: Sequence[Any], **_: Any) -> list[float]:
        """``tests``: one test suite per completion (a required column: the scorer checks the data has it)."""
        if len(tests) != len(completions):
            raise ValueError(f"'tests' has {len(tests)} items for {len(completions)} completions")
        completions = completion_texts(completions)
        parsed: dict[int, TestSuite] = {}  # the G completions of a prompt share one tests object
        for item in tests:
            if id(item) not in parsed:
                parsed[id(item)] = parse_tests(item)
        suites = [parsed[id(item)] for item in tests]
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(completions)))) as pool:
            return list(pool.map(self.score, completions, suites))


@register("code")
def code(timeout: float = 5.0, total_timeout: float = 30.0, memory_mb: int = 1024,
         all_or_nothing: bool = False, float_tolerance: float = FLOAT_TOLERANCE,
         allow_unsandboxed: bool = False, workers: int | None = None) -> CodeReward:
    """Code reward (§7): ``timeout`` per test run, ``total_timeout`` per completion,
    ``memory_mb`` per process, ``float_tolerance`` for real-number outputs (0: exact),
    ``allow_unsandboxed`` to run without namespace isolation, ``workers`` concurrent
    sandboxes (default: CPU count)."""
    return CodeReward(timeout=timeout, total_timeout=total_timeout, memory_mb=memory_mb,
                      all_or_nothing=all_or_nothing, float_tolerance=float_tolerance,
                      allow_unsandboxed=allow_unsandboxed, workers=workers)
