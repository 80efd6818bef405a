"""`rlvr dpo`: direct preference optimisation of the LoRA policy; see pipeline/supervised/dpo.py."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.core.models import load_policy, save_weights
from pipeline.eval.evaluation import format_with_error
from pipeline.eval.pass_at_k import held_out_accuracy
from pipeline.supervised.dpo import dpo_objective, pair_outcomes, reference_likelihood_accuracy, with_reference
from pipeline.supervised.fit import evaluate, finish_stage, start_stage, train_and_measure
from stages.common import run_stage, stage_dir, stage_parser
from stages.pairs import preference_data

log = logging.getLogger(__name__)


def run_dpo(config: Config, out: Path) -> dict[str, Any]:
    """Train per `config.dpo`; writes `out/adapter` (`out/model` after full fine-tuning) and metrics.json."""
    start = time.perf_counter()
    setup = start_stage(config, out)
    cfg, device, pad_id = config.dpo, setup.device, setup.tokenizer.pad_token_id
    train, held, info = preference_data(config, cfg, setup, out)
    policy = load_policy(setup.model_path, config.lora, adapter=config.model.adapter, dtype=config.model.dtype,
                         device=device)
    train_items, held_items = (with_reference(policy, pairs, pad_id, device, cfg.batch_size, cfg.bf16_autocast)
                               for pairs in (train, held))
    loss = dpo_objective(policy, cfg.beta, pad_id, device)
    kw = {"device": device, "micro_batch_size": cfg.batch_size}
    metrics = train_and_measure(policy, train_items, loss, cfg, out=out, batch_size=cfg.batch_size,
                                epochs=cfg.epochs, seed=config.seed, desc="dpo",
                                measure=lambda: evaluate(policy, held_items, loss, bf16=cfg.bf16_autocast, **kw),
                                **kw)
    saved = save_weights(policy, out, setup.tokenizer)
    outcomes = pair_outcomes(policy, held_items, pad_id, device, cfg.batch_size, cfg.bf16_autocast)
    summary = {
        "output": str(saved),
        **held_out_accuracy(outcomes, held),
        "reference_pairwise_accuracy": 0.5,  # the reference's Delta is 0 on every pair (ties count half)
        "reward_margin": metrics["margin_after"],
        "chosen_reward": metrics["chosen_reward_after"],
        "rejected_reward": metrics["rejected_reward_after"],
        "likelihood_accuracy": metrics["likelihood_accuracy_after"],
        "reference_likelihood_accuracy": reference_likelihood_accuracy(held_items),
    }
    summary["beats_reference"] = summary["pairwise_accuracy"] > summary["reference_pairwise_accuracy"]
    if not summary["beats_reference"]:
        log.warning("DPO's held-out pairwise accuracy %.3f does not beat the reference's 0.5",
                    summary["pairwise_accuracy"])
    return finish_stage(out, {**summary, **metrics, **info, "time_s": time.perf_counter() - start})


def main_with(config: Config, args: argparse.Namespace | None = None) -> dict[str, Any]:
    metrics = run_dpo(config, stage_dir(config, "dpo"))
    print(f"dpo: held-out pairwise accuracy "
          f"{format_with_error(metrics['pairwise_accuracy'], metrics['pairwise_accuracy_stderr'])} "
          f"(SE over {metrics['eval_prompts']} prompts; reference 0.5), "
          f"reward margin {metrics['reward_margin']:.3f}; saved {metrics['output']}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    run_stage(main_with, stage_parser("dpo", __doc__.splitlines()[0]), argv)


if __name__ == "__main__":
    main()
