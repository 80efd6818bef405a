"""`rlvr sft`: supervised fine-tuning on worked solutions (LoRA by default); see pipeline/supervised/sft.py."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.core.models import load_policy, save_weights
from pipeline.data.problems import load_problems_for
from pipeline.data.subsets import split_holdout
from pipeline.rollout import make_engine
from pipeline.supervised.fit import evaluate, finish_stage, start_stage, train_and_measure
from pipeline.supervised.sft import FORMAT_CHECK_PROBLEMS, build_examples, generation_check, sft_loss, with_solutions
from stages.common import run_stage, stage_dir, stage_parser

log = logging.getLogger(__name__)


def run_sft(config: Config, out: Path) -> dict[str, Any]:
    """Train per `config.sft`; writes `out/adapter` (or `out/model`), metrics.jsonl and metrics.json."""
    start = time.perf_counter()
    setup = start_stage(config, out)
    cfg, tokenizer, device = config.sft, setup.tokenizer, setup.device
    problems = with_solutions(load_problems_for(config.data, "train", seed=config.seed), cfg.max_examples, config.seed)
    train_problems, held_problems = split_holdout(problems, cfg.eval_fraction, config.seed)
    train = build_examples(tokenizer, train_problems, config.data.system_prompt, cfg.max_length)
    held = build_examples(tokenizer, held_problems, config.data.system_prompt, cfg.max_length)
    log.info("SFT on %d examples, %d held out (%s)", len(train), len(held), config.data.train)
    policy = load_policy(setup.model_path, config.lora, adapter=config.model.adapter, dtype=config.model.dtype,
                         device=device)
    loss = sft_loss(policy, tokenizer.pad_token_id, device, packing=cfg.packing, max_length=cfg.max_length)
    probe = train[: len(held)]  # training examples of the held-out set's size: train loss before/after

    engine = make_engine(config.rollout, str(setup.model_path), device=device, policy=policy)
    check = held_problems[:FORMAT_CHECK_PROBLEMS]

    def measure() -> dict[str, float]:
        kw = {"micro_batch_size": cfg.micro_batch_size, "device": device, "bf16": cfg.bf16_autocast}
        losses = {"train_loss": evaluate(policy, probe, loss, **kw)["loss"],
                  "eval_loss": evaluate(policy, held, loss, **kw)["loss"]}
        engine.update_weights(policy)
        return {**losses, **generation_check(engine, tokenizer, check, config)}

    metrics = train_and_measure(policy, train, loss, cfg, measure=measure, out=out, device=device,
                                batch_size=cfg.batch_size, micro_batch_size=cfg.micro_batch_size,
                                epochs=cfg.epochs, seed=config.seed, desc="sft")
    engine.close()
    saved = save_weights(policy, out, tokenizer)
    metrics.update(train_examples=len(train), eval_examples=len(held), format_check_problems=len(check),
                   packing=cfg.packing, output=str(saved), time_s=time.perf_counter() - start)
    return finish_stage(out, metrics)


def main_with(config: Config, args: argparse.Namespace | None = None) -> dict[str, Any]:
    metrics = run_sft(config, stage_dir(config, "sft"))
    print(f"sft: eval loss {metrics['eval_loss_before']:.4f} -> {metrics['eval_loss_after']:.4f}, "
          f"format rate {metrics['format_rate_before']:.2f} -> {metrics['format_rate_after']:.2f}; "
          f"saved {metrics['output']}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    run_stage(main_with, stage_parser("sft", __doc__.splitlines()[0]), argv)


if __name__ == "__main__":
    main()
