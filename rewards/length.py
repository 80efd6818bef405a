"""DAPO soft overlong punishment and overlong filtering (docs/algorithms.md §7).

With ``L_max`` the generation limit (``max_tokens``) and ``L_cache`` the buffer (``cache``)::

    0                                  if |o| <= L_max - L_cache
    ((L_max - L_cache) - |o|) / L_cache  if L_max - L_cache < |o| <= L_max
    -1                                 if |o| > L_max
"""

from __future__ import annotations

from typing import Any, Sequence

from rewards.registry import RewardFn, register

__all__ = ["soft_overlong_penalty", "soft_overlong"]


def soft_overlong_penalty(length: int, max_tokens: int, cache: int) -> float:
    """Penalty in [-1, 0] for a completion of ``length`` tokens (formula in the module docstring)."""
    threshold = max_tokens - cache
    if length <= threshold:
        return 0.0
    if length <= max_tokens:
        return (threshold - length) / cache
    return -1.0


@register("soft_overlong")
def soft_overlong(max_tokens: int | None = None, cache: int | None = None) -> RewardFn:
    """Soft overlong punishment (§7) read from the ``lengths`` column (completion token counts).

    ``max_tokens`` is L_max (required); ``cache`` is L_cache, default ``max_tokens // 5``
    (DAPO: 20480 and 4096); it must satisfy ``1 <= cache <= max_tokens``.
    """
    if max_tokens is None or max_tokens < 1:
        raise ValueError(f"soft_overlong needs max_tokens >= 1 (the generation limit), got {max_tokens}")
    cache = max(1, max_tokens // 5) if cache is None else cache
    if not 1 <= cache <= max_tokens:
        raise ValueError(f"soft_overlong needs 1 <= cache <= max_tokens ({max_tokens}), got {cache}")

    def reward(completions: list[str], lengths: Sequence[int] | None = None, **_: Any) -> list[float]:
        if lengths is None:
            raise ValueError("the soft_overlong reward needs a 'lengths' column (completion token counts)")
        return [soft_overlong_penalty(int(n), max_tokens, cache) for n in lengths]

    return reward
