"""`rlvr reward-model`: train a Bradley-Terry reward model on preference pairs; see pipeline/supervised/reward_model.py."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.config import Config
from pipeline.eval.evaluation import format_with_error
from pipeline.supervised.reward_model import run_reward_model
from stages.common import run_stage, stage_dir, stage_parser


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
