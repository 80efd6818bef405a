"""`rlvr prepare-model`: turn `model.name` into a local folder transformers and vLLM load."""

from __future__ import annotations

import argparse

from pipeline.config import Config
from pipeline.core.models import prepare_model
from stages.common import run_stage, stage_parser


def main_with(config: Config, args: argparse.Namespace | None = None) -> str:
    path = prepare_model(config.model.name, config.model.cache_dir)
    print(path)
    return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("prepare-model", __doc__.splitlines()[0])
    run_stage(main_with, parser, argv)


if __name__ == "__main__":
    main()
