"""Name -> factory registry for reward functions (docs/algorithms.md §7).

A reward function follows the TRL/open-r1 convention::

    fn(completions: list[str], **columns) -> list[float]

Dataset columns (``answer``, ``tests``, ...) and trainer columns (``lengths``,
``truncated``) arrive as keyword lists with one item per completion; a reward
ignores the columns it does not use. A *factory* takes the reward's parameters
as keyword arguments and returns such a callable (optionally with a ``close()``
method when it owns workers).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol

__all__ = ["RewardFn", "register", "get", "available", "accepted_params"]


class RewardFn(Protocol):
    """A callable scoring a batch of completions, one float per completion."""

    def __call__(self, completions: list[str], **columns: Any) -> list[float]: ...


RewardFactory = Callable[..., RewardFn]

_FACTORIES: dict[str, RewardFactory] = {}


def register(name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Decorator registering ``factory`` under ``name``; duplicate names are rejected."""

    def decorator(factory: RewardFactory) -> RewardFactory:
        if name in _FACTORIES:
            raise ValueError(f"reward {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorator


def available() -> list[str]:
    """Sorted names of all registered rewards."""
    return sorted(_FACTORIES)


def accepted_params(name: str) -> set[str] | None:
    """Parameter names the factory of ``name`` accepts; ``None`` means any (``**kwargs``)."""
    factory = _factory(name)
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def get(name: str, **params: Any) -> RewardFn:
    """Build the reward registered as ``name`` configured with ``params``.

    Raises ``ValueError`` naming an unknown reward or parameter and listing the valid ones.
    """
    accepted = accepted_params(name)
    if accepted is not None:
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for reward {name!r}; "
                f"valid parameters: {', '.join(sorted(accepted)) or '(none)'}"
            )
    return _FACTORIES[name](**params)


def _factory(name: str) -> RewardFactory:
    if name not in _FACTORIES:
        raise ValueError(f"unknown reward {name!r}; available rewards: {', '.join(available())}")
    return _FACTORIES[name]
