"""Code-execution reward (docs/algorithms.md §7, code): fraction of unit tests passed in a sandbox.

The program is the last fenced Python block of the completion (```python ... ```
or a bare ``` ... ``` fence). A ``tests`` item is either

* a string of Python test code, run after the solution in the same program
  (asserts, or a ``check`` function and its call); it counts as one test and
  passes only if it runs to its end;
* a list of ``{"input": str, "output": str}`` stdin/stdout cases (also accepted:
  the same list JSON-encoded in a string, or ``{"inputs": [...], "outputs": [...]}``);
  outputs are compared after stripping, ignoring trailing whitespace per line.

Completions are scored in parallel with threads; the work happens in the
sandbox processes (``rewards.sandbox``).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from rewards.extract import as_text
from rewards.messages import completion_texts
from rewards.registry import register
from rewards.sandbox import Sandbox
from rewards.verifier_pool import default_workers

__all__ = ["CodeReward", "code", "extract_code", "outputs_match"]

MAX_CODE_CHARS = 100_000
_PYTHON_TAGS = ("", "python", "py", "python3")


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


def outputs_match(actual: str, expected: str) -> bool:
    """Equal after stripping both and ignoring trailing whitespace on each line."""
    def normalize(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines()]

    return normalize(actual) == normalize(expected)


def _cases(value: Any) -> list[dict[str, str]] | None:
    if isinstance(value, dict) and "inputs" in value and "outputs" in value:
        value = [{"input": i, "output": o} for i, o in zip(value["inputs"], value["outputs"])]
    if isinstance(value, (list, tuple)) and all(isinstance(c, dict) and {"input", "output"} <= set(c)
                                                for c in value):
        return [{"input": as_text(c["input"]), "output": as_text(c["output"])} for c in value]
    return None


def _parse_tests(tests: Any) -> tuple[str | None, list[dict[str, str]] | None]:
    """``(test_code, None)`` or ``(None, cases)``; ``(None, None)`` if unusable."""
    if isinstance(tests, str):
        if tests.lstrip()[:1] in ("[", "{"):
            try:
                cases = _cases(json.loads(tests))
            except ValueError:
                cases = None
            if cases is not None:
                return None, cases
        return (tests, None) if tests.strip() else (None, None)
    return None, _cases(tests)


class CodeReward:
    """Fraction of tests passed (or 1/0 with ``all_or_nothing``); 0 without a code block or tests."""

    def __init__(self, timeout: float = 5.0, total_timeout: float = 30.0, memory_mb: int = 1024,
                 all_or_nothing: bool = False, workers: int | None = None) -> None:
        self.sandbox = Sandbox(timeout=timeout, total_timeout=total_timeout, memory_mb=memory_mb)
        self.all_or_nothing = all_or_nothing
        self.workers = workers or default_workers()

    def score(self, completion: str, tests: Any) -> float:
        """Reward of one completion against its tests."""
        program = extract_code(completion)
        test_code, cases = _parse_tests(tests)
        if not program or len(program) > MAX_CODE_CHARS or (test_code is None and not cases):
            return 0.0
        if test_code is not None:
            passed, total = int(self.sandbox.run(program, test_code=test_code)[0].ok), 1
        else:
            runs = self.sandbox.run(program, inputs=[case["input"] for case in cases])
            passed = sum(run.ok and outputs_match(run.stdout, case["output"]) for run, case in zip(runs, cases))
            total = len(cases)
        if self.all_or_nothing:
            return float(passed == total)
        return passed / total

    def __call__(self, completions: list[str], tests: Sequence[Any] | None = None, **_: Any) -> list[float]:
        if tests is None:
            raise ValueError("the code reward needs a 'tests' column")
        if len(tests) != len(completions):
            raise ValueError(f"'tests' has {len(tests)} items for {len(completions)} completions")
        completions = completion_texts(completions)
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(completions)))) as pool:
            return list(pool.map(self.score, completions, tests))


@register("code")
def code(timeout: float = 5.0, total_timeout: float = 30.0, memory_mb: int = 1024,
         all_or_nothing: bool = False, workers: int | None = None) -> CodeReward:
    """Code reward (§7): ``timeout`` per test run, ``total_timeout`` per completion,
    ``memory_mb`` per process, ``workers`` concurrent sandboxes (default: CPU count)."""
    return CodeReward(timeout=timeout, total_timeout=total_timeout, memory_mb=memory_mb,
                      all_or_nothing=all_or_nothing, workers=workers)
