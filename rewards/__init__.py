"""Rule-based rewards for RL from verifiable rewards (docs/algorithms.md §7).

A reward is ``fn(completions: list[str], **columns) -> list[float]`` (the
TRL/open-r1 convention). Built-ins: ``accuracy``, ``format``, ``soft_overlong``,
``code`` (and ``reward_model`` from ``rewards.model``). ``rewards.get(name, **params)`` builds one; ``@rewards.register(name)``
adds a factory; ``RewardScorer`` combines weighted terms from config.
See docs/rewards.md.
"""

from rewards.registry import RewardFn, available, get, register
from rewards.scorer import RewardResult, RewardScorer

from rewards import code, format, length, math, model  # noqa: E402,F401  (register the built-ins)

__all__ = ["RewardFn", "RewardResult", "RewardScorer", "available", "get", "register"]
