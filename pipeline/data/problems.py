"""Problems: one record type and its loaders (local JSONL/Parquet, the hub, reasoning-gym).

    problems = load_problems("datasets/train.jsonl", levels=[1, 2])
    problems = load_problems_for(config.data, "train", seed=0)

This module chooses the source and filters what it gives (levels, sources, a seeded subset). The
`Problem` record and column presets are `pipeline/data/records.py`; reading files and the hub is
`pipeline/data/readers.py`; reasoning-gym is `pipeline/data/gym.py`. Turning problems into prompts
is `pipeline/data/prompts.py`.

Bad input raises `DataError` naming the file, the 1-based line (or row) and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pipeline.config import DataConfig, DataError
from pipeline.data.gym import GYM_PREFIX, gym_problems, load_gym
from pipeline.data.readers import FILE_SUFFIXES, HUB_TIMEOUT_S, check_hub, is_local, not_found, read_hub, read_rows
from pipeline.data.records import (COLUMN_PRESETS, FIELDS, GOLD_MAX_WORDS, REQUIRED, ROLES, Problem, conversation,
                                   last_boxed, rows_to_problems, split_gsm8k)
from pipeline.data.subsets import seeded_subset

__all__ = ["COLUMN_PRESETS", "FIELDS", "FILE_SUFFIXES", "GOLD_MAX_WORDS", "GYM_PREFIX", "HUB_TIMEOUT_S", "REQUIRED",
           "ROLES", "TEST_SEED_OFFSET", "DataError", "Problem", "check_hub", "conversation", "gym_problems", "is_local",
           "last_boxed", "load_problems", "load_problems_for", "read_rows", "split_gsm8k"]
"""The problem-loading API (names kept here from before the split into records, readers and gym)."""

TEST_SEED_OFFSET = 1_000_003
"""`load_problems_for(..., "test")` draws reasoning-gym problems from seed + this, clear of train's."""


def _select(
    problems: list[Problem], where: str, levels: Sequence[int] | None, sources: Sequence[str] | None,
    limit: int | None, seed: int,
) -> list[Problem]:
    kept = [
        p for p in problems
        if (levels is None or p.level in levels)
        and (sources is None or any(p.source == s or p.source.startswith(s.rstrip("/") + "/") for s in sources))
    ]
    if not kept:
        raise DataError(
            f"{where}: no problems left after filtering (levels={levels}, sources={sources}); the data has "
            f"levels {sorted({p.level for p in problems})} and sources {sorted({p.source for p in problems})}"
        )
    return seeded_subset(kept, limit, seed)


def load_problems(
    spec: str,
    *,
    split: str = "train",
    preset: str = "auto",
    columns: dict[str, str] | None = None,
    levels: Sequence[int] | None = None,
    sources: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    gym_size: int = 1000,
) -> list[Problem]:
    """Problems from a local .jsonl/.json/.parquet file, a hub dataset or `reasoning_gym/<task>`.

    `levels`/`sources` filter (a source also matches its sub-sources: `reasoning_gym` matches
    `reasoning_gym/chain_sum`); `limit` keeps a seeded random subset in file order.
    """
    if spec.startswith(GYM_PREFIX):
        problems = load_gym(spec, seed, gym_size)
    else:
        path = Path(spec).expanduser()
        if path.is_file():
            rows, unit = read_rows(path)
        elif is_local(spec):
            raise DataError(not_found(path))
        else:
            rows, unit = read_hub(spec, split), "row"
        problems = rows_to_problems(rows, spec, unit, preset, dict(columns or {}))
    return _select(problems, spec, levels, sources, limit, seed)


def load_problems_for(config: DataConfig, which: Literal["train", "test"], seed: int = 0) -> list[Problem]:
    """The train or test problems a `DataConfig` names (the test split of hub datasets is "test")."""
    train = which == "train"
    return load_problems(
        config.train if train else config.test,
        split=config.split if train else "test",
        preset=config.preset,
        columns=config.columns,
        levels=config.levels,
        sources=config.sources,
        limit=config.limit if train else config.test_limit,
        seed=seed if train else seed + TEST_SEED_OFFSET,
        gym_size=config.gym_size,
    )
