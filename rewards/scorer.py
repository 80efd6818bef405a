"""Weighted composition of reward terms from config (docs/algorithms.md §7).

``R_i = sum_k weight_k * r_k(o_i)`` over the terms that apply to sample i; every
term's unweighted values are kept for logging. A term returning ``None`` for a
sample (TRL's "not applicable") adds nothing to that sample and is counted; a
sample no term applies to, or with a NaN/inf value, gets a NaN total, and
``RewardResult.non_finite`` names the term and sample (the trainer's non-finite
policy decides what happens next). Terms come from the config's ``reward.terms``:
objects with ``name``, ``weight`` and ``params`` attributes (the ``RewardTerm``
config class) or plain dicts with those keys.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from rewards.registry import RewardFn, accepted_params, get, validate

__all__ = ["RewardResult", "RewardScorer", "TrainerState", "check_terms", "component_stats", "term_label"]

SHARED_SETTINGS = ("workers", "timeout", "max_tokens")
"""The scorer's settings handed to every term whose factory takes them."""


@dataclass(frozen=True)
class TrainerState:
    """The ``trainer_state`` argument, as TRL passes it: ``global_step`` = updates done so far."""

    global_step: int
    max_steps: int


@dataclass
class RewardResult:
    """``total[i]``: weighted sum for completion i (NaN when no term applies or a value is NaN/inf);
    ``components[name][i]``: that term's unweighted value, ``None`` where it does not apply."""

    total: list[float]
    components: dict[str, list[float | None]]

    def non_finite(self) -> list[tuple[str, int]]:
        """``(term, sample index)`` of each NaN or inf value, and ``("*", i)`` for each sample
        no term applied to (every term returned ``None``): the samples whose total is NaN."""
        bad = [(name, i) for name, values in self.components.items()
               for i, v in enumerate(values) if v is not None and not math.isfinite(v)]
        bad += [("*", i) for i in range(len(self.total))
                if all(values[i] is None for values in self.components.values())]
        return bad

    def describe(self, term: str, index: int) -> str:
        """One line naming the term and sample of a ``non_finite`` entry."""
        if term == "*":
            return f"sample {index}: every reward term ({', '.join(self.components)}) returned None"
        return f"sample {index}: reward term {term!r} returned {self.components[term][index]}"


def component_stats(components: Mapping[str, Sequence[float | None]]) -> dict[str, float]:
    """Per term: ``reward/<term>/mean`` over the samples it applies to (absent if none) and
    ``reward/<term>/none_frac``, the fraction of samples it returned ``None`` for."""
    stats: dict[str, float] = {}
    for name, values in components.items():
        applied = [v for v in values if v is not None]
        if applied:
            stats[f"reward/{name}/mean"] = sum(applied) / len(applied)
        stats[f"reward/{name}/none_frac"] = 1.0 - len(applied) / len(values) if values else 0.0
    return stats


def _term_fields(term: Any) -> tuple[str, float, dict[str, Any]]:
    if isinstance(term, dict):
        unknown = set(term) - {"name", "weight", "params"}
        if unknown or "name" not in term:
            raise ValueError(f"a reward term needs keys name, weight, params; got {sorted(term)}")
        name, weight, params = term["name"], term.get("weight", 1.0), term.get("params") or {}
    else:
        name, weight, params = term.name, term.weight, term.params or {}
    if not isinstance(params, dict):
        raise ValueError(f"reward {name!r}: params must be a mapping, got {type(params).__name__}")
    weight = float(weight)
    if not math.isfinite(weight):
        raise ValueError(f"reward {name!r}: weight must be a finite number, got {weight}")
    return str(name), weight, dict(params)


def check_terms(terms: Iterable[Any]) -> None:
    """Check every term's name, weight and params against the reward's signature, building nothing.

    Meant for config load, before any model loads. Raises ``ValueError`` naming the
    term (``reward.terms[i]``), with a close match for a misspelt name or parameter.
    """
    for index, term in enumerate(terms):
        try:
            name, _, params = _term_fields(term)
            validate(name, params, supplied=SHARED_SETTINGS)
        except ValueError as exc:
            raise ValueError(f"reward.terms[{index}]: {exc}") from None


def _call_columns(reward: RewardFn) -> tuple[set[str] | None, set[str]]:
    """(columns the reward accepts, ``None`` = all via ``**kwargs``; columns it requires)."""
    try:
        params = list(inspect.signature(reward).parameters.values())
    except (TypeError, ValueError):
        return None, set()
    keyword = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = {p.name for p in keyword if p.default is p.empty}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None, required
    return {p.name for p in keyword}, required


def _values(label: str, returned: Any, n: int) -> list[float | None]:
    try:
        values = list(returned)
    except TypeError:
        raise TypeError(f"reward {label!r} returned a {type(returned).__name__}, not a list") from None
    if len(values) != n:
        raise RuntimeError(f"reward {label!r} returned {len(values)} values for {n} completions")
    out: list[float | None] = []
    for i, value in enumerate(values):
        try:
            out.append(None if value is None else float(value))
        except (TypeError, ValueError):
            raise TypeError(f"reward {label!r} returned {value!r} for sample {i}; "
                            "expected a number or None (not applicable)") from None
    return out


@dataclass
class _Term:
    label: str
    weight: float
    reward: RewardFn
    accepts: set[str] | None
    requires: set[str]

    def check_columns(self, columns: Iterable[str]) -> None:
        """``ValueError`` naming the columns the reward requires (parameters without a default) that
        ``columns`` lacks."""
        missing = sorted(self.requires - set(columns) - {"completions"})
        if missing:
            raise ValueError(f"reward {self.label!r} needs column(s) {', '.join(map(repr, missing))}, which this "
                             f"data does not have; columns: completions, {', '.join(sorted(columns))}")

    def __call__(self, completions: list[Any], columns: dict[str, Any]) -> Any:
        """The reward called TRL's way: keyword arguments only, the columns it names (all with ``**kwargs``)."""
        self.check_columns(columns)
        kwargs = columns if self.accepts is None else {k: v for k, v in columns.items() if k in self.accepts}
        return self.reward(completions=completions, **kwargs)


def term_label(name: str, taken: Sequence[str]) -> str:
    """A term's name in metrics and TensorBoard tags (``reward/<label>/mean``): a registered name as is,
    ``module:fn`` and ``path/file.py:fn`` as ``fn``; characters a tag cannot hold as ``_``; a label
    already in ``taken`` gets ``_2``, ``_3``, ..."""
    base = re.sub(r"[^\w.-]", "_", name.rpartition(":")[2]) or "reward"
    label, n = base, 2
    while label in taken:
        label, n = f"{base}_{n}", n + 1
    return label


class RewardScorer:
    """Builds each term with ``rewards.get`` and returns totals plus components per batch.

    ``workers``, ``timeout`` and ``max_tokens`` are shared settings handed to every
    term whose factory takes that parameter, unless the term's params set it.
    Each term is logged under ``term_label`` (a file or module reward under its function's name; a
    term listed twice as ``name``, ``name_2``, ...).
    """

    def __init__(self, terms: Iterable[Any], workers: int | None = None, timeout: float = 5.0,
                 max_tokens: int | None = None) -> None:
        shared = dict(zip(SHARED_SETTINGS, (workers, timeout, max_tokens)))
        self._terms: list[_Term] = []
        try:
            for index, term in enumerate(terms):
                name, weight, params = _term_fields(term)
                accepted = accepted_params(name)
                for key, value in shared.items():
                    if value is not None and key not in params and (accepted is None or key in accepted):
                        params[key] = value
                try:
                    reward = get(name, **params)
                except (ValueError, TypeError) as exc:  # a factory refusing a parameter's value
                    raise ValueError(f"reward.terms[{index}] ({name}): {exc}") from None
                label = term_label(name, [t.label for t in self._terms])
                self._terms.append(_Term(label, weight, reward, *_call_columns(reward)))
        except Exception:
            self.close()
            raise
        if not self._terms:
            raise ValueError("RewardScorer needs at least one reward term")

    def check_columns(self, columns: Iterable[str]) -> None:
        """Before any scoring: ``ValueError`` naming the first term that requires a column (a parameter
        without a default, e.g. the code reward's ``tests``) missing from ``columns``."""
        for term in self._terms:
            term.check_columns(columns)

    def __call__(self, completions: list[Any], **columns: Any) -> RewardResult:
        """Score ``completions`` (strings, or TRL message lists); ``columns`` are keyword lists with one
        item per completion (``prompts`` and ``prompt`` alias each other) or single values (``trainer_state``)."""
        n = len(completions)
        for key, column in columns.items():
            if isinstance(column, (list, tuple)) and len(column) != n:
                raise ValueError(f"column {key!r} has {len(column)} items for {n} completions")
        if "prompts" in columns or "prompt" in columns:
            columns.setdefault("prompts", columns.get("prompt"))
            columns.setdefault("prompt", columns["prompts"])
        components = {t.label: _values(t.label, t(completions, columns), n) for t in self._terms}
        total = []
        for i in range(n):
            applied = [t.weight * components[t.label][i] for t in self._terms if components[t.label][i] is not None]
            total.append(sum(applied) if applied else math.nan)
        return RewardResult(total=total, components=components)

    def run_info(self) -> dict[str, Any]:
        """What the terms report about the run in a ``run_info`` dict attribute (e.g. the code
        reward's ``{"sandbox/level": ...}``), merged, for the run's metrics."""
        info: dict[str, Any] = {}
        for term in self._terms:
            info.update(getattr(term.reward, "run_info", {}))
        return info

    def close(self) -> None:
        """Release the worker pools of the terms that own one."""
        for term in self._terms:
            close = getattr(term.reward, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
