"""`rlvr sft`: supervised fine-tuning on worked solutions (LoRA by default); see pipeline/supervised/sft.py."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.config import Config
from pipeline.supervised.sft import run_sft
from stages.common import run_stage, stage_dir, stage_parser


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
