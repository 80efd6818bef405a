"""`rlvr reward-model`: train a Bradley-Terry reward model on preference pairs; see pipeline/supervised/reward_model.py."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.core.reward_model import build_reward_model, save_reward_model
from pipeline.eval.evaluation import format_with_error
from pipeline.eval.pass_at_k import held_out_accuracy
from pipeline.supervised.fit import evaluate, finish_stage, start_stage, train_and_measure
from pipeline.supervised.reward_model import pair_margins, reward_loss
from stages.common import run_stage, stage_dir, stage_parser
from stages.pairs import preference_data


def run_reward_model(config: Config, out: Path) -> dict[str, Any]:
    """Train per `config.reward_model`; writes the reward model folder `out` and its metrics.json."""
    start = time.perf_counter()
    setup = start_stage(config, out)
    cfg, device = config.reward_model, setup.device
    train, held, info = preference_data(config, cfg, setup, out)
    rm = build_reward_model(setup.model_path, config.lora, config.model.adapter, config.model.dtype, device, config.seed)
    loss = reward_loss(rm, setup.tokenizer.pad_token_id, device)
    kw = {"device": device, "micro_batch_size": cfg.batch_size}
    metrics = train_and_measure(rm, train, loss, cfg, out=out, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                seed=config.seed, desc="reward-model",
                                measure=lambda: evaluate(rm, held, loss, bf16=cfg.bf16_autocast, **kw), **kw)
    save_reward_model(rm, setup.tokenizer, out, base_model=setup.model_path,
                      system_prompt=config.data.system_prompt, max_length=cfg.max_length)
    margins = pair_margins(rm, held, setup.tokenizer.pad_token_id, device, batch_size=cfg.batch_size,
                           bf16=cfg.bf16_autocast)
    accuracy = held_out_accuracy([float(m > 0) for m in margins], held)
    metrics = {**accuracy, **metrics, **info, "time_s": time.perf_counter() - start}
    return finish_stage(out, metrics)


def main_with(config: Config, args: argparse.Namespace | None = None) -> dict[str, Any]:
    out = stage_dir(config, "reward_model")
    metrics = run_reward_model(config, out)
    print(f"reward-model: held-out pairwise accuracy {metrics['accuracy_before']:.3f} -> "
          f"{format_with_error(metrics['pairwise_accuracy'], metrics['pairwise_accuracy_stderr'])} "
          f"(SE over {metrics['eval_prompts']} prompts) on {metrics['eval_pairs']} pairs; saved {out}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    run_stage(main_with, stage_parser("reward-model", __doc__.splitlines()[0]), argv)


if __name__ == "__main__":
    main()
