"""Problems drawn from reasoning-gym's generators: `reasoning_gym/<task>?size=500&seed=3&key=value`
(docs/design.md, "Layout").

    problems = gym_problems("chain_sum", size=100, seed=0)
    problems = load_gym("reasoning_gym/chain_sum?max_terms=2", seed=0, size=100)
"""

from __future__ import annotations

from typing import Any

from pipeline.config import DataError
from pipeline.data.records import Problem, split_gsm8k

GYM_PREFIX = "reasoning_gym/"


def _parse_value(text: str) -> Any:
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(","))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def gym_problems(task: str, size: int, seed: int, **config: Any) -> list[Problem]:
    """`size` problems drawn from reasoning-gym's `task` generator; its answer is the gold.

    The solution is the generator's own worked answer where it has one (gsm_symbolic),
    else "". The generator's metadata is kept in `extra["metadata"]`.
    """
    import reasoning_gym

    try:
        entries = reasoning_gym.create_dataset(task, size=size, seed=seed, **config)
    except (ValueError, TypeError, AssertionError) as exc:
        raise DataError(f"{GYM_PREFIX}{task}: {exc or type(exc).__name__}") from None
    problems = []
    for entry in entries:
        cot = entry["metadata"].get("answer_cot")
        answer = str(entry["answer"])
        solution = split_gsm8k(cot, answer)[0] if isinstance(cot, str) else ""
        problems.append(Problem(
            str(entry["question"]), answer, solution, 0, f"{GYM_PREFIX}{task}",
            {"metadata": entry["metadata"]},
        ))
    return problems


def load_gym(spec: str, seed: int, size: int) -> list[Problem]:
    """`reasoning_gym/<task>?size=500&seed=3&max_terms=2`: other keys go to the task's config."""
    task, _, query = spec[len(GYM_PREFIX):].partition("?")
    config: dict[str, Any] = {"size": size, "seed": seed}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"{spec}: query item {item!r} must look like key=value")
        config[key] = _parse_value(value)
    return gym_problems(task, **config)

