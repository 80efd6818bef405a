"""`rlvr dpo`: direct preference optimisation of the LoRA policy; see pipeline/supervised/dpo.py."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.config import Config
from pipeline.eval.evaluation import format_with_error
from pipeline.supervised.dpo import run_dpo
from stages.common import run_stage, stage_dir, stage_parser


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
