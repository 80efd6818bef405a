"""The data each stage reads loads, and a data error names the config keys behind it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from pipeline.config import Config, DataConfig, RewardModelConfig
from pipeline.data.preference import load_pairs
from pipeline.data.problems import DataError, Problem, load_problems_for
from pipeline.eval.evaluation import load_eval_problems
from pipeline.supervised.sft import with_solutions

def _keyed(key: str, load: Callable[[], list]) -> list:
    """`load()`, its DataError prefixed with the config key that named the data."""
    try:
        return load()
    except DataError as exc:
        raise DataError(f"{key}: {exc}") from None


@functools.lru_cache(maxsize=4)
def _load(data: str, which: str, seed: int, stamp: tuple[int, int] | None) -> tuple[Problem, ...]:
    """`load_problems_for` on a DataConfig's JSON, remembered: the reward check and RL's data check read
    the same training problems; `stamp` (a local file's mtime and size) tells an edited file apart."""
    return tuple(load_problems_for(DataConfig.model_validate_json(data), which, seed=seed))  # type: ignore[arg-type]


def load_stage_problems(config: Config, which: str, levels: list[int] | None = None) -> tuple[list[Problem], str]:
    """The `which` ("train"/"test") problems, filtered by `levels` (a stage's, e.g. rl.levels) when set,
    else data.levels; a DataError names data.{which} and, where they matter, the keys behind it."""
    data = config.data if levels is None else config.data.model_copy(update={"levels": levels})
    key = f"data.{which}"
    try:
        path = Path(getattr(data, which)).expanduser()
        stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None
        problems = list(_load(data.model_dump_json(), which, config.seed, stamp))
    except DataError as exc:
        raise DataError(f"{key}: {exc}{_data_hint(config, which, levels, str(exc))}") from None
    return problems, f"{key}: {getattr(data, which)}: {len(problems)} problems"


def _data_hint(config: Config, which: str, levels: list[int] | None, message: str) -> str:
    """The config keys behind a data error that its loader cannot name: the filter's (`rl.levels` set by
    the recipe wins over `data.levels`), or data.columns/data.preset, which apply to data.test too."""
    data = config.data
    if "after filtering" in message:
        keys = [f"rl.levels={levels}" if levels is not None else f"data.levels={data.levels}" if data.levels else "",
                f"data.sources={data.sources}" if data.sources else ""]
        return f"; the filter is {' and '.join(k for k in keys if k)}: widen or unset it"
    if which == "test" and (data.columns or data.preset != "auto"):
        mapping = " and ".join(k for k, v in (("data.columns", data.columns), ("data.preset", data.preset != "auto")) if v)
        return (f"; {mapping} apply to data.test too: set data.test to a held-out file in the same layout as "
                f"data.train ({data.train})")
    return ""


def check_sft_data(config: Config) -> list[str]:
    """SFT's problems load and at least two have a worked solution (one is held out)."""
    problems, line = load_stage_problems(config, "train")
    solved = with_solutions(problems, config.sft.max_examples, config.seed)
    if len(solved) < 2:
        raise DataError(
            f"data.train: {config.data.train}: {len(solved)} of {len(problems)} problems have a worked solution; "
            f"SFT trains on the `solution` column and needs at least 2 (map yours with data.columns.solution=COLUMN)")
    return [f"{line}, {len(solved)} used for SFT (with a worked solution)"]


def check_preference_data(config: Config, section: RewardModelConfig, key: str) -> list[str]:
    """The pairs file `section.pairs` when set, else the training problems pairs are sampled from."""
    if section.pairs:
        pairs = _keyed(f"{key}.pairs", lambda: load_pairs(section.pairs))
        return [f"{key}.pairs: {section.pairs}: {len(pairs)} pairs"]
    return [load_stage_problems(config, "train")[1], f"{key}.pairs: not set: sampled from {section.num_problems} training problems"]


def check_rl_data(config: Config) -> list[str]:
    """RL's training and held-out problems load (with `rl.levels` when set)."""
    return [load_stage_problems(config, which, config.rl.levels)[1] for which in ("train", "test")]


def check_eval_data(config: Config) -> list[str]:
    cfg = config.eval
    problems = _keyed("eval.dataset", lambda: load_eval_problems(cfg.dataset, split=cfg.split, levels=cfg.levels,
                                                                 limit=cfg.problems, seed=cfg.seed))
    return [f"eval.dataset: {cfg.dataset}: {len(problems)} problems"]


STAGE_CHECKS: dict[str, Callable[[Config], list[str]]] = {
    "sft": check_sft_data,
    "reward-model": lambda c: check_preference_data(c, c.reward_model, "reward_model"),
    "dpo": lambda c: check_preference_data(c, c.dpo, "dpo"),
    "rl": check_rl_data,
    "eval": check_eval_data,
}
"""The data each stage reads. `rlvr run` runs those of every stage in CHAIN."""
