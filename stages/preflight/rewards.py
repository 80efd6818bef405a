"""reward.terms build as RL builds them, and the data has the columns they read."""

from __future__ import annotations

from pathlib import Path

import rewards
from pipeline.config import Config, ConfigError, RewardTerm
from pipeline.data.problems import DataError
from stages.catalog import STAGES
from stages.preflight.data import load_stage_problems

RL_COLUMNS = ("prompts", "prompt", "completion_ids", "problem", "answer", "solution", "lengths", "truncated",
              "trainer_state", "step")
"""The columns RL hands every reward besides the data's own (pipeline/rl/trainer.py `Trainer._score`)."""


def _built_by_the_chain(config: Config, term: RewardTerm, stage: str) -> bool:
    """A `reward_model` term reading the reward model `rlvr run` trains first (not there before the run)."""
    folder = Path(config.output_dir) / STAGES["reward-model"].folder
    path = term.params.get("path")
    return (stage == "run" and term.name == "reward_model" and isinstance(path, str)
            and folder.resolve() in (Path(path).resolve(), *Path(path).resolve().parents))


def check_rewards(config: Config, stage: str) -> list[str]:
    """`reward.terms`: every name resolves (registered, `module:fn` or `file.py:fn`), takes its params and
    builds with their values (the factories check them: `extract: boxd`, the code sandbox), as RL builds
    them; for RL, the data has every column a reward requires (the code reward's `tests`)."""
    line = f"reward.terms: {', '.join(term.name for term in config.reward.terms)}"
    terms = [term for term in config.reward.terms if not _built_by_the_chain(config, term, stage)]
    try:
        rewards.check_terms(config.reward.terms)
        scorer = rewards.RewardScorer(terms, workers=config.reward.workers, timeout=config.reward.timeout,
                                      max_tokens=config.rollout.max_tokens) if terms else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if scorer is None:
        return [line]
    with scorer:
        if stage in ("rl", "run"):
            problems = load_stage_problems(config, "train", config.rl.levels)[0]
            try:
                scorer.check_columns({*RL_COLUMNS, *(key for p in problems for key in p.extra)})
            except ValueError as exc:
                raise DataError(f"data.train: {config.data.train}: {exc}") from None
    return [line]
