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

from pipeline.config import Config, ConfigError, load_config
from stages.catalog import STAGES


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlvr {stage}", description=description)
    parser.add_argument("config", nargs="?", help="YAML recipe (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. rl.lr=2e-6")
    add_output_options(parser, stage)
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
        check_output_folder(config, args)
        main(config, args)
    except (ConfigError, DataError, ModelError, EngineUnavailable) as exc:
        sys.exit(f"{parser.prog}: {exc}")


# ---------------------------------------------------------------- output folders: nothing lost silently

RECORD_ONLY = ("config.yaml",)
"""Files a stage writes when it starts: a folder holding only these holds no results yet."""


def add_output_options(parser: argparse.ArgumentParser, stage: str) -> None:
    """`--overwrite` on every stage; `--resume` too (only a resumable stage accepts it, see
    `check_output_folder`). `args.stage` names the stage."""
    parser.set_defaults(stage=stage)
    resumable = stage in STAGES and STAGES[stage].resumes
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output folder that holds an earlier run's results, replacing "
                             "files of the same name" + (" (rlvr run: re-run stages whose config changed, "
                                                         "and the stages after them)" if stage == "run" else ""))
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its last checkpoint" if resumable
                        else "rlvr run always resumes; accepted, changes nothing" if stage == "run"
                        else argparse.SUPPRESS)


def check_output_folder(config: Config, args: argparse.Namespace) -> None:
    """Refuse to start a stage whose output folder (`<output_dir>/<stage>/`) already holds results,
    unless `--resume` (a resumable stage) or `--overwrite` says what to do with them.

    Reads only: deletes and rewrites nothing. Raises ConfigError with one line naming the folder.
    """
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: pass one")
    stage = STAGES.get(args.stage)
    if stage is None or stage.folder is None:
        return
    if args.resume and not stage.resumes:
        raise ConfigError(f"--resume: `rlvr {args.stage}` keeps no checkpoints to resume from; "
                          "pass --overwrite to run it again")
    folder = Path(config.output_dir) / stage.folder
    if args.resume or args.overwrite or not folder.is_dir():
        return
    held = sorted(p.name for p in folder.iterdir() if p.name not in RECORD_ONLY)
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        options = "--resume to continue it, --overwrite" if stage.resumes else "--overwrite"
        raise ConfigError(f"{folder} already holds an earlier {args.stage} run's results ({shown}); pass "
                          f"{options} to write over it, or choose another output_dir")
