"""Weighted composition of reward terms from config (docs/algorithms.md §7).

``R_i = sum_k weight_k * r_k(o_i)``; every term's unweighted values are kept
for logging. Terms come from the config's ``reward.terms``: objects with
``name``, ``weight`` and ``params`` attributes (the ``RewardTerm`` config class)
or plain dicts with those keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from rewards.registry import RewardFn, accepted_params, get

__all__ = ["RewardResult", "RewardScorer"]


@dataclass
class RewardResult:
    """``total[i]``: weighted sum for completion i; ``components[name][i]``: that term's unweighted value."""

    total: list[float]
    components: dict[str, list[float]]


def _term_fields(term: Any) -> tuple[str, float, dict[str, Any]]:
    if isinstance(term, dict):
        unknown = set(term) - {"name", "weight", "params"}
        if unknown or "name" not in term:
            raise ValueError(f"a reward term needs keys name, weight, params; got {sorted(term)}")
        name, weight, params = term["name"], term.get("weight", 1.0), term.get("params") or {}
    else:
        name, weight, params = term.name, term.weight, term.params or {}
    return str(name), float(weight), dict(params)


class RewardScorer:
    """Builds each term with ``rewards.get`` and returns totals plus components per batch.

    ``workers``, ``timeout`` and ``max_tokens`` are shared settings handed to every
    term whose factory takes that parameter, unless the term's params set it.
    A term listed twice is logged as ``name``, ``name#2``, ...
    """

    def __init__(self, terms: Iterable[Any], workers: int | None = None, timeout: float = 5.0,
                 max_tokens: int | None = None) -> None:
        shared = {"workers": workers, "timeout": timeout, "max_tokens": max_tokens}
        self._terms: list[tuple[str, float, RewardFn]] = []
        try:
            for term in terms:
                name, weight, params = _term_fields(term)
                accepted = accepted_params(name)
                for key, value in shared.items():
                    if value is not None and key not in params and (accepted is None or key in accepted):
                        params[key] = value
                label, n = name, 2
                while label in (existing for existing, _, _ in self._terms):
                    label, n = f"{name}#{n}", n + 1
                self._terms.append((label, weight, get(name, **params)))
        except Exception:
            self.close()
            raise
        if not self._terms:
            raise ValueError("RewardScorer needs at least one reward term")

    def __call__(self, completions: list[str], **columns: Any) -> RewardResult:
        n = len(completions)
        for key, column in columns.items():
            if isinstance(column, (list, tuple)) and len(column) != n:
                raise ValueError(f"column {key!r} has {len(column)} items for {n} completions")
        components: dict[str, list[float]] = {}
        total = [0.0] * n
        for label, weight, reward in self._terms:
            values = [float(v) for v in reward(completions, **columns)]
            if len(values) != n:
                raise RuntimeError(f"reward {label!r} returned {len(values)} values for {n} completions")
            components[label] = values
            total = [t + weight * v for t, v in zip(total, values)]
        return RewardResult(total=total, components=components)

    def run_info(self) -> dict[str, Any]:
        """What the terms report about the run in a ``run_info`` dict attribute (e.g. the code
        reward's ``{"sandbox/level": ...}``), merged, for the run's metrics."""
        info: dict[str, Any] = {}
        for _, _, reward in self._terms:
            info.update(getattr(reward, "run_info", {}))
        return info

    def close(self) -> None:
        """Release the worker pools of the terms that own one."""
        for _, _, reward in self._terms:
            close = getattr(reward, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
