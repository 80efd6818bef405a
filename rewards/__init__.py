"""Rule-based rewards for RL from verifiable rewards (docs/algorithms.md §7).

A reward follows TRL's convention: ``fn(completions, **kwargs) -> list[float | None]``,
called with keyword arguments only (columns in docs/rewards.md). Built-ins: ``accuracy``,
``format``, ``soft_overlong``, ``code`` (and ``reward_model`` from ``rewards.model``).
``rewards.get(name, **params)`` builds one (a registered name, ``module:function`` or
``file.py:function``); ``rewards.register(name)`` adds a reward function or a factory;
``rewards.check_terms(terms)`` validates config terms without building them;
``RewardScorer`` combines weighted terms from config. See docs/rewards.md.
"""

from rewards.messages import completion_texts, is_messages, message_text
from rewards.registry import RewardFn, available, get, is_reward_function, register, resolve
from rewards.scorer import RewardResult, RewardScorer, TrainerState, check_terms, component_stats

from rewards import code, format, length, math, model  # noqa: E402,F401  (register the built-ins)

__all__ = ["RewardFn", "RewardResult", "RewardScorer", "TrainerState", "available", "check_terms",
           "completion_texts", "component_stats", "get", "is_messages", "is_reward_function", "message_text",
           "register", "resolve"]
