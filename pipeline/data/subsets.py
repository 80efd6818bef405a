"""Seeded random subsets: the one way a limit or a held-out share picks its items (docs/design.md).

    problems = seeded_subset(problems, 500, seed=0)            # 500 of them, in their order
    train, held = split_holdout(examples, 0.1, seed=0)         # 10% held out, disjoint

The same (items, size, seed) always gives the same subset, so a limit or a held-out split is
reproducible across runs and stages.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def seeded_subset(items: Sequence[T], size: int | None, seed: int) -> list[T]:
    """A seeded random `size` of `items`, kept in their order; all of them when `size` is None or not smaller."""
    if size is None or size >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), size))
    return [items[i] for i in keep]


def split_holdout(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, held-out), both in `items`' order: a seeded random `fraction` (at least one item, never all)
    held out (`seeded_subset` of the positions). ValueError with fewer than two items."""
    if len(items) < 2:
        raise ValueError(f"need at least 2 examples to hold some out, got {len(items)}")
    n_eval = min(len(items) - 1, max(1, round(fraction * len(items))))
    held = set(seeded_subset(range(len(items)), n_eval, seed))
    return [x for i, x in enumerate(items) if i not in held], [items[i] for i in sorted(held)]
