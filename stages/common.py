"""What every stage shares: argument parsing into a typed Config, logging, output folders."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rewards
from pipeline.config import Config, ConfigError, load_config


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlvr {stage}", description=description)
    parser.add_argument("config", nargs="?", help="YAML recipe (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. rl.lr=2e-6")
    return parser


def parse_config(args: argparse.Namespace) -> Config:
    """The config from `args.config` (or configs/demo.yaml) plus overrides; exits on error."""
    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not Path(path).exists():
        path, overrides = None, [path, *overrides]
    if path is None and Path("configs/demo.yaml").is_file():
        path = "configs/demo.yaml"
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        sys.exit(f"config error: {exc}")


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("RLVR_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def stage_dir(config: Config, stage: str) -> Path:
    path = Path(config.output_dir) / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def run_stage(main: Callable[[Config, argparse.Namespace], Any], parser: argparse.ArgumentParser,
              argv: list[str] | None) -> None:
    """Parse, set up logging, run; a user-facing error (bad config, data, model, missing engine)
    exits non-zero with its one-line message instead of a traceback."""
    from pipeline.data import DataError
    from pipeline.models import ModelError
    from pipeline.rollout import EngineUnavailable

    args = parser.parse_args(argv)
    setup_logging()
    config = parse_config(args)
    try:
        rewards.check_terms(config.reward.terms)  # misspelt reward names/params, user code: before any model
    except ValueError as exc:
        sys.exit(f"config error: {exc}")
    try:
        main(config, args)
    except (ConfigError, DataError, ModelError, EngineUnavailable) as exc:
        sys.exit(f"{parser.prog}: {exc}")
