"""The preference-pair step the reward-model and DPO stages share (docs/algorithms.md §10): pairs from
`<section>.pairs` or sampled from the starting policy, saved, encoded and split by prompt.

The pieces are library calls: `pipeline.data.preference` (loading, pairing, encoding, splitting),
the rollout engine (sampling) and the accuracy reward (judging).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import rewards
from pipeline.config import Config, RewardModelConfig
from pipeline.core.models import load_policy
from pipeline.data.preference import (EncodedPair, PreferencePair, encode_pairs, load_pairs, pairs_from_samples,
                                      save_pairs, split_by_prompt)
from pipeline.data.problems import load_problems_for
from pipeline.data.prompts import encode_prompts, filter_long_prompts
from pipeline.data.subsets import seeded_subset
from pipeline.rollout import SamplingSettings, make_engine
from pipeline.supervised.fit import StageSetup

log = logging.getLogger(__name__)


def sample_pairs(config: Config, section: RewardModelConfig, setup: StageSetup) -> list[PreferencePair]:
    """Pairs built by sampling the starting policy (`model.adapter`, e.g. SFT) through the rollout engine.

    `section.num_problems` training problems x `section.samples_per_problem` samples each, judged
    by the accuracy reward, then paired by `pairs_from_samples` (gold fallback below half as many
    pairs as problems).
    """
    tokenizer, system = setup.tokenizer, config.data.system_prompt
    problems = filter_long_prompts(tokenizer, load_problems_for(config.data, "train", seed=config.seed), system,
                                   config.data.max_prompt_tokens)
    problems = seeded_subset(problems, section.num_problems, config.seed)
    n = section.samples_per_problem
    policy = load_policy(setup.model_path, config.lora, adapter=config.model.adapter, dtype=config.model.dtype,
                         device=setup.device)
    engine = make_engine(config.rollout, str(setup.model_path), device=setup.device, policy=policy)
    log.info("sampling %d problems x %d for preference pairs", len(problems), n)
    outputs = engine.generate(encode_prompts(tokenizer, problems, system, config.data.max_prompt_tokens),
                              SamplingSettings.from_config(config.rollout, n=n))
    engine.close()
    texts = [[c.text for c in group] for group in outputs]
    extract = config.reward.answer_extraction
    accuracy = rewards.get("accuracy", extract=extract, timeout=config.reward.timeout)
    try:
        scores = accuracy([t for group in texts for t in group], answer=[p.answer for p in problems for _ in range(n)])
    finally:
        accuracy.close()
    log.info("sampled accuracy %.3f", sum(scores) / len(scores))
    correct = [[s > 0.5 for s in scores[i * n:(i + 1) * n]] for i in range(len(problems))]
    return pairs_from_samples(problems, texts, correct, seed=config.seed, min_pairs=max(1, len(problems) // 2),
                              pairs_per_problem=section.pairs_per_problem)


def preference_data(config: Config, section: RewardModelConfig, setup: StageSetup,
                    out: Path) -> tuple[list[EncodedPair], list[EncodedPair], dict[str, Any]]:
    """(train, held-out) encoded pairs from `section.pairs` or by sampling; writes `out/pairs.jsonl`."""
    pairs = load_pairs(section.pairs) if section.pairs else sample_pairs(config, section, setup)
    save_pairs(out / "pairs.jsonl", pairs)
    encoded = encode_pairs(setup.tokenizer, pairs, config.data.system_prompt, section.max_length)
    train, held = split_by_prompt(encoded, section.eval_fraction, config.seed)
    info = {"pairs_source": section.pairs or "sampled", "pairs_file": str(out / "pairs.jsonl"),
            "train_pairs": len(train), "eval_pairs": len(held), "pair_origins": dict(Counter(p.origin for p in pairs))}
    log.info("preference pairs: %s", info)
    return train, held, info
