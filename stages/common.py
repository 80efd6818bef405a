"""What every stage shares: argument parsing into a typed Config, --help/--print-config/--dry-run,
the preflight before any model loads, logging, output folders."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.config import Config, ConfigError, DataError, commented_yaml, load_config, yaml_value
from pipeline.core.allocator import keep_freed_memory
from pipeline.core.checkpoint import latest_checkpoint
from pipeline.core.models import ModelError
from pipeline.rollout import EngineUnavailable
from pipeline.learner.data_parallel import LearnerRankError
from stages.catalog import COMMANDS, COMMON_KEYS, STAGES
from stages.preflight import preflight
from stages.preflight.resume import check_resume


def stage_parser(stage: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser every stage shares: config file, overrides, --dry-run, --print-config; its --help lists
    the stage's config keys with their defaults and the files it writes (stages/catalog.py)."""
    parser = argparse.ArgumentParser(prog=f"rlvr {stage}", description=description or COMMANDS[stage].summary,
                                     epilog=stage_help(stage), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="YAML recipe (default: configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. rl.lr=2e-6")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, data, model paths and checkpoints without loading a model; exit")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config this stage reads (YAML, every key commented); exit")
    parser.set_defaults(stage=stage)
    add_output_options(parser, stage)
    return parser


def stage_help(stage: str) -> str:
    """The config keys `stage` reads with their defaults and first docstring line, and what it writes."""
    info = COMMANDS[stage]
    defaults = Config()
    lines = ["config keys (override with key=value; defaults shown):"]
    for key in (*COMMON_KEYS, *info.sections):
        value = getattr(defaults, key)
        if isinstance(value, BaseModel):
            lines += _section_lines(key, value)
        else:
            lines.append(_key_line(key, value, Config.model_fields[key].description))
    lines += ["", "writes (under output_dir):", *(f"  {path}" for path in info.writes)]
    return "\n".join(lines)


def _section_lines(prefix: str, section: BaseModel) -> list[str]:
    """One help line per key of `section`; a nested section (the chosen policy loss's settings) key by key."""
    lines, plain = [], section.model_dump()
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            lines += _section_lines(f"{prefix}.{name}", value)
        else:
            lines.append(_key_line(f"{prefix}.{name}", plain[name], field.description))
    return lines


HELP_DOC_WIDTH = 60
"""Characters per line of a key's help text (wrapped; the first sentence of its docstring)."""


def first_sentence(description: str | None) -> str:
    """The docstring's first sentence, whole (it may span lines): up to a `.` (not `e.g.`) before a
    capital or a backtick, or the end."""
    text = " ".join((description or "").split())
    return re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s+(?=[A-Z`])", text, maxsplit=1)[0]


def _key_line(key: str, value: Any, description: str | None) -> str:
    """`  key = default   First sentence of its docstring,` wrapped in a column (a long key: the text below)."""
    shown = yaml_value(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    doc = textwrap.wrap(first_sentence(description), HELP_DOC_WIDTH, break_on_hyphens=False) or [""]
    if len(key) + len(shown) > 44:
        return "\n".join([f"  {key} = {shown}", *(f"      {line}" for line in doc)])
    return "\n".join([f"  {key + ' = ' + shown:<47} {doc[0]}", *(f"{'':<50}{line}" for line in doc[1:])])


_OVERRIDE_KEY = re.compile(r"[A-Za-z_]\w*(\.\w+)+")


def is_override(item: str) -> bool:
    """`key=value` whose key is a dotted config key (`eval.n=8`) or a top-level non-section key
    (`seed=1`); `sft=runs/demo/sft` (a label) and `runs/a=b/c` (a path) are not."""
    key, sep, _ = item.partition("=")
    if not sep:
        return False
    field = Config.model_fields.get(key)
    return bool(_OVERRIDE_KEY.fullmatch(key)) or (field is not None and not _is_section(field.annotation))


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def parse_stage_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Options and positionals in any order; overrides and a YAML file swallowed by a list option
    (`--compare a b eval.n=8`) go where they belong."""
    args = parser.parse_intermixed_args(argv)
    for name, value in vars(args).items():
        if name != "overrides" and isinstance(value, list):
            positional = [item for item in value if is_override(item) or _is_yaml(item)]
            setattr(args, name, [item for item in value if item not in positional] or None)
            args.overrides += positional
    return _place_config_file(args)


def _is_yaml(item: str) -> bool:
    return "=" not in item and item.endswith((".yaml", ".yml"))


def _place_config_file(args: argparse.Namespace) -> argparse.Namespace:
    """An override in the config file's place (`rlvr rl rl.lr=1`) joins the overrides; a YAML file
    among the overrides (`rlvr rl rl.lr=1 configs/grpo.yaml`) becomes the config file."""
    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        args.overrides = [args.config, *args.overrides]
        args.config = None
    files = [item for item in args.overrides if _is_yaml(item)]
    if args.config is None and len(files) == 1:
        args.config = files[0]
        args.overrides = [item for item in args.overrides if item != files[0]]
    return args


def parse_config(args: argparse.Namespace) -> Config:
    """The config from `args.config` (or configs/demo.yaml) plus overrides; exits on error."""
    args = _place_config_file(args)
    path = args.config
    if path is None and Path("configs/demo.yaml").is_file():
        path = "configs/demo.yaml"
    stage = getattr(args, "stage", None)
    try:
        return load_config(path, list(args.overrides),
                           section=COMMANDS[stage].section if stage in COMMANDS else None)
    except ConfigError as exc:
        sys.exit(f"config error: {exc}")


def print_config(config: Config, stage: str, source: str | None) -> None:
    """The resolved config `stage` reads, as commented YAML that `rlvr STAGE FILE` loads back."""
    print(f"# rlvr {stage}: resolved config ({source or 'defaults'} + overrides, presets applied)")
    print(commented_yaml(config, (*COMMON_KEYS, *COMMANDS[stage].sections)), end="")


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


class Stopped(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler's preemption, `kill`): unwinds the stage like Ctrl-C, so Ray, the
    reward workers and open files close on the way out. A KeyboardInterrupt because Ray's blocking
    calls (`ray.get`, `ray.wait`) turn only that into a clean interrupt, re-raised as a plain
    KeyboardInterrupt: `_received` keeps which signal it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []
"""The signals `_stop` received in this process, newest last."""


def _stop(signum: int, _frame: object) -> None:
    _received.append(signum)
    raise Stopped(signum)


def stopped_line(prog: str, stage: str, signum: int, config: Config) -> str:
    """The one line a stage stopped by `signum` ends with: what stopped it, what is kept (RL: its
    latest checkpoint, or none yet) and how to continue."""
    if stage == "run":
        where = "its finished stages and RL's last checkpoint are kept: run the same command again to continue"
    elif stage in STAGES and STAGES[stage].resumes:
        checkpoint = latest_checkpoint(Path(config.output_dir) / STAGES[stage].folder)
        where = (f"its last checkpoint, {checkpoint}, is kept: continue with --resume" if checkpoint is not None
                 else f"it saved no checkpoint yet ({stage}.save_every={getattr(config, stage).save_every}): "
                      "--resume starts it again from step 0")
    else:
        where = "it did not finish: run it again"
    return f"{prog}: stopped by {signal.Signals(signum).name}; {where}"


def run_stage(main: Callable[[Config, argparse.Namespace], Any], parser: argparse.ArgumentParser,
              argv: list[str] | None,
              checks: Sequence[Callable[[Config, argparse.Namespace], list[str]]] = ()) -> None:
    """Parse, set up logging, run the preflight (stages/preflight/ and the stage's own `checks`), run.

    `--print-config` prints the resolved config and `--dry-run` the preflight's summary (both: both);
    they return without loading a model. A user-facing error (bad config, data, model, missing engine)
    exits non-zero with its one-line message instead of a traceback; SIGTERM and Ctrl-C stop the stage
    with one line (`stopped_line`) and exit status 128 + the signal's number.
    """
    args = parse_stage_args(parser, argv)
    setup_logging()
    config = parse_config(args)
    if args.print_config:
        print_config(config, args.stage, args.config)
        if not args.dry_run:
            return
    try:
        summary = preflight(config, args.stage) + check_output_folder(config, args)
        for check in checks:
            summary += check(config, args)
        if args.dry_run:
            print(f"{parser.prog}: dry run: every check passed (nothing loaded or written)")
            print("\n".join(f"  {line}" for line in summary))
            return
        signal.signal(signal.SIGTERM, _stop)  # pipeline/cluster/runtime.py keeps it past ray.init
        keep_freed_memory()
        main(config, args)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`Stopped`, maybe re-raised plain by Ray)
        signum = exc.signum if isinstance(exc, Stopped) else _received[-1] if _received else signal.SIGINT
        print(stopped_line(parser.prog, args.stage, signum, config), file=sys.stderr)
        sys.exit(128 + signum)
    except (ConfigError, DataError, ModelError, EngineUnavailable, LearnerRankError) as exc:
        sys.exit(f"{parser.prog}: {exc}")
    except ConnectionError as exc:  # joining the Ray at cluster.address failed: Ray's own reason, first line
        if config.cluster.address is None:
            raise
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        sys.exit(f"{parser.prog}: cluster.address={config.cluster.address}: cannot join the Ray cluster: {reason}")


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


def check_output_folder(config: Config, args: argparse.Namespace) -> list[str]:
    """Refuse to start a stage whose output folder (`<output_dir>/<stage>/`) already holds results,
    unless `--resume` (a resumable stage, whose checkpoint must fit: stages/preflight/resume.py) or
    `--overwrite` says what to do with them; the dry run's summary lines.

    Reads only: deletes and rewrites nothing. Raises ConfigError with one line naming the folder.
    """
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: pass one")
    stage = STAGES.get(args.stage)
    if stage is None or stage.folder is None:
        return []
    if args.resume and not stage.resumes:
        raise ConfigError(f"--resume: `rlvr {args.stage}` keeps no checkpoints to resume from; "
                          "pass --overwrite to run it again")
    if args.resume:
        return check_resume(config, args.stage)
    folder = Path(config.output_dir) / stage.folder
    if args.overwrite or not folder.is_dir():
        return []
    held = sorted(p.name for p in folder.iterdir() if p.name not in RECORD_ONLY)
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        options = "--resume to continue it, --overwrite" if stage.resumes else "--overwrite"
        raise ConfigError(f"{folder} already holds an earlier {args.stage} run's results ({shown}); pass "
                          f"{options} to write over it, or choose another output_dir")
    return []
