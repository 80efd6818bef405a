"""`rlvr rl`: GRPO-family RL with verifiable rewards (docs/algorithms.md §1-9), resumable."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.config import Config
from stages.common import run_stage, stage_dir, stage_parser, write_json_atomic


def run(config: Config, resume: bool = False) -> dict[str, Any]:
    """Train, then write `<output_dir>/rl/metrics.json` (the last record) as the finished marker."""
    from pipeline.trainer import Trainer

    trainer = Trainer(config, resume=resume)
    try:
        last = trainer.run()
    finally:
        trainer.close()
    result = {**last, "adapter": str(trainer.out / f"checkpoint-{config.rl.steps}" / "adapter")}
    write_json_atomic(stage_dir(config, "rl") / "metrics.json", result)
    return result


def main_with(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    return run(config, resume=args.resume)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("rl", __doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    run_stage(main_with, parser, argv)


if __name__ == "__main__":
    main()
