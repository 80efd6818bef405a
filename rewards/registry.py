"""Reward functions by name: built-ins, registered ones, and the user's own code (docs/algorithms.md §7).

Two kinds of callable are accepted, registered or named in config:

* a **reward function** in TRL's convention, recognised by its ``completions``
  parameter: ``def f(completions, **kwargs) -> list[float | None]``; it is called
  with keyword arguments only (the columns are listed in docs/rewards.md) and
  receives exactly the ones it names, or all of them with ``**kwargs``;
* a **factory**: takes the reward's parameters as keyword arguments and returns a
  reward function (optionally with a ``close()`` method when it owns workers).

A name is a registered name (``accuracy``), ``package.module:function`` (imported;
the working directory is put on ``sys.path``) or ``path/to/file.py:function``.
Names and parameters are checked against signatures without building anything
(``validate``), so a config can be checked before any model loads.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

__all__ = ["RewardFn", "register", "get", "available", "accepted_params", "is_reward_function",
           "resolve", "validate"]


class RewardFn(Protocol):
    """A callable scoring a batch of completions: one float (or ``None``: not applicable) per completion."""

    def __call__(self, *, completions: list[Any], **columns: Any) -> list[float | None]: ...


RewardFactory = Callable[..., RewardFn]

_FACTORIES: dict[str, Callable[..., Any]] = {}
_IMPORTED: dict[str, Callable[..., Any]] = {}
_FILE_MODULES: dict[Path, Any] = {}


def _hint(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def register(name: str, fn: Callable[..., Any] | None = None) -> Any:
    """Register a reward function or a factory under ``name``.

    ``@register("brevity")`` decorates; ``register("brevity", fn)`` registers directly
    and returns ``fn``. Raises ``ValueError`` for a duplicate name or one holding ``:``
    (reserved for ``module:function``).
    """

    def decorator(target: Callable[..., Any]) -> Callable[..., Any]:
        if ":" in name:
            raise ValueError(f"reward name {name!r} must not contain ':' (reserved for module:function)")
        if name in _FACTORIES:
            raise ValueError(f"reward {name!r} is already registered")
        if not callable(target):
            raise ValueError(f"reward {name!r}: {target!r} is not callable")
        _FACTORIES[name] = target
        return target

    return decorator if fn is None else decorator(fn)


def available() -> list[str]:
    """Sorted names of all registered rewards."""
    return sorted(_FACTORIES)


def _parameters(target: Callable[..., Any]) -> list[inspect.Parameter] | None:
    """The target's parameters, or ``None`` when it has no inspectable signature."""
    try:
        return list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None


def is_reward_function(target: Callable[..., Any]) -> bool:
    """Is ``target`` a TRL-style reward function (it names a ``completions`` parameter), not a factory?"""
    return any(p.name == "completions" for p in _parameters(target) or ())


def _load_file(path: Path) -> Any:
    """Import a Python file once, as its own module (in ``sys.modules``, so dataclasses and pickling work)."""
    path = path.resolve()
    if path not in _FILE_MODULES:
        name = f"rlvr_user_rewards_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        _FILE_MODULES[path] = module
    return _FILE_MODULES[path]


def _import(spec: str) -> Callable[..., Any]:
    """The callable ``module:function`` or ``file.py:function`` names; ``ValueError`` saying what failed."""
    source, _, attr = spec.rpartition(":")
    if not source or not attr:
        raise ValueError(f"reward {spec!r}: write module:function or path/to/file.py:function")
    is_file = source.endswith(".py") or "/" in source or os.sep in source
    path = Path(source).expanduser()
    if is_file and not path.is_file():
        raise ValueError(f"reward {spec!r}: file {source!r} not found (relative to {os.getcwd()})")
    if not is_file and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `my_pkg.rewards` next to the config, as `python -m` would find it
    try:
        module = _load_file(path) if is_file else importlib.import_module(source)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported the same way
        what = "file" if is_file else "module"
        raise ValueError(f"reward {spec!r}: cannot import {what} {source!r} ({type(exc).__name__}: {exc})") from None
    target = getattr(module, attr, None)
    if target is None:
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ValueError(f"reward {spec!r}: {source!r} has no {attr!r}{_hint(attr, names)}")
    if not callable(target):
        raise ValueError(f"reward {spec!r}: {attr!r} is a {type(target).__name__}, not a function")
    return target


def resolve(name: str) -> Callable[..., Any]:
    """The reward function or factory ``name`` refers to (registered, ``module:fn`` or ``file.py:fn``).

    Raises ``ValueError`` naming an unknown reward (with a close match) or what failed to import.
    """
    if name in _FACTORIES:
        return _FACTORIES[name]
    if ":" not in name:
        raise ValueError(f"unknown reward {name!r}{_hint(name, _FACTORIES)}; available rewards: "
                         f"{', '.join(available())}, or module:function / path/to/file.py:function")
    if name not in _IMPORTED:
        _IMPORTED[name] = _import(name)
    return _IMPORTED[name]


def accepted_params(name: str) -> set[str] | None:
    """Parameter names ``name`` accepts as ``params``; ``None`` means any (a factory with ``**kwargs``).

    A reward function's params bind its own named parameters (other than ``completions``).
    """
    target = resolve(name)
    params = _parameters(target)
    if params is None:
        return None
    if not is_reward_function(target) and any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"completions"}


def validate(name: str, params: dict[str, Any], supplied: Iterable[str] = ()) -> None:
    """Check ``name`` resolves and ``params`` fit its signature, without building the reward.

    ``supplied``: parameters provided elsewhere (the scorer's shared settings). Raises
    ``ValueError`` naming an unknown parameter (with a close match) or a missing required one.
    """
    accepted = accepted_params(name)
    if accepted is not None:
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ValueError(
                f"unknown parameter {unknown[0]!r}{_hint(unknown[0], accepted)} for reward {name!r}; "
                f"valid parameters: {', '.join(sorted(accepted)) or '(none)'}"
            )
    target = resolve(name)
    if is_reward_function(target):
        return
    required = [p.name for p in _parameters(target) or ()
                if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in params and p.name not in set(supplied)]
    if required:
        hint = (" (a reward function takes `completions`; without it this is read as a factory)"
                if _hint(required[0], ["completions"]) else "")
        raise ValueError(f"reward {name!r} needs parameter {required[0]!r} in its params{hint}")


def get(name: str, **params: Any) -> RewardFn:
    """Build the reward ``name`` with ``params``: call a factory, or bind a reward function's parameters.

    Raises ``ValueError`` naming an unknown reward or parameter and listing the valid ones,
    or a factory that returns something not callable.
    """
    validate(name, params)
    target = resolve(name)
    if is_reward_function(target):
        return functools.partial(target, **params) if params else target
    reward = target(**params)
    if not callable(reward):
        raise ValueError(f"reward {name!r}: the factory returned a {type(reward).__name__}, not a function "
                         "(a reward function names a `completions` parameter)")
    return reward
