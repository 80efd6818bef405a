"""`rlvr rl`: GRPO-family RL with verifiable rewards (docs/algorithms.md §1-9), resumable.

    rlvr rl configs/grpo.yaml rl.lr=2e-6         # a fresh run into an empty output folder
    rlvr rl configs/grpo.yaml --resume           # continue a killed run from its last checkpoint
    rlvr rl configs/grpo.yaml --overwrite        # a new run where an earlier one left results

Writes `rl/checkpoint-<step>/` (the newest `rl.keep_checkpoints` of this run), `rl/final/adapter/`
(`rl/final/model/` after full fine-tuning) after the last step, and `rl/metrics.json` naming it.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.config import Config
from pipeline.core.checkpoint import write_json_atomic
from pipeline.rl.trainer import Trainer
from stages.common import run_stage, stage_dir, stage_parser


def run(config: Config, resume: bool = False) -> dict[str, Any]:
    """Train, then write `<output_dir>/rl/metrics.json` (the last record and `output`, the trained
    weights' folder `rl/final/...`) as the finished marker."""
    trainer = Trainer(config, resume=resume)
    marker = stage_dir(config, "rl") / "metrics.json"
    marker.unlink(missing_ok=True)  # an earlier run's marker, withdrawn once data and model loaded
    try:
        last = trainer.run()
    finally:
        trainer.close()
    result = {**last, "output": str(trainer.final)}
    write_json_atomic(marker, result)
    return result


def main_with(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    return run(config, resume=args.resume)


def main(argv: list[str] | None = None) -> None:
    run_stage(main_with, stage_parser("rl", __doc__.splitlines()[0]), argv)


if __name__ == "__main__":
    main()
