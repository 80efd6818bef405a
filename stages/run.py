"""`rlvr run`: prepare-model, sft, reward-model, dpo, rl and eval in order, resumable.

    rlvr run configs/demo.yaml                   # run, or continue, the chain in output_dir
    rlvr run configs/demo.yaml sft.lr=1e-4 --overwrite   # re-run sft (changed) and every stage after it

The reward model and DPO start from SFT's output and learn from the same preference pairs
(sampled once by the reward-model stage unless `reward_model.pairs` / `dpo.pairs` name files);
RL starts from SFT's output too, and eval compares base, SFT, DPO and RL on the same problems
(each with its paired difference from SFT, the stage DPO and RL start from).

A stage whose `<output_dir>/<stage>/metrics.json` exists is finished and skipped, so an
interrupted chain picks up where it stopped (RL itself resumes from its last checkpoint).
When the chain starts a stage it records the values of the config keys that stage reads
(stages/catalog.py: COMMON_KEYS and the stage's sections, less NOT_HASHED) in
`<stage>/inputs.json`, and their hash (`config_hash`) in the finished marker. The values are
the user's: what the chain derives (model.adapter pointing at SFT's output, dpo.pairs at the
reward model's pairs) is not a user change; instead a stage after a re-run one re-runs too.
If a finished stage (or RL's checkpoints) was made with other values, the chain refuses before
anything runs, naming the keys; `--overwrite` re-runs that stage and the ones after it.
Every stage's metrics and paths go into `<output_dir>/manifest.json` under the stage's name
(e.g. `reward_model.pairwise_accuracy`), with the config and the git commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.checkpoint import latest_checkpoint, write_json_atomic
from pipeline.config import ClusterConfig, Config, ConfigError
from pipeline.eval.evaluation import PAIRED, STDERR, format_difference, format_with_error
from pipeline.core.models import is_adapter
from stages import dpo, evaluate, prepare_model, reward_model, rl, sft
from stages.catalog import CHAIN, COMMON_KEYS, STAGES
from stages.common import run_stage, stage_parser

log = logging.getLogger(__name__)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def starting_from(config: Config, checkpoint: str) -> Config:
    """`config` with the model the next stages start from: an SFT adapter, or a fully fine-tuned model."""
    model = {"adapter": checkpoint} if is_adapter(checkpoint) else {"name": checkpoint, "adapter": None}
    return config.model_copy(update={"model": config.model.model_copy(update=model)})


def with_dpo_pairs(config: Config, pairs_file: str) -> Config:
    """`config` whose DPO stage reads the reward model's pairs, unless it names its own file."""
    if config.dpo.pairs is not None:
        return config
    return config.model_copy(update={"dpo": config.dpo.model_copy(update={"pairs": pairs_file})})


NOT_HASHED = frozenset({
    "output_dir", "device", "model.cache_dir", "reward.workers", "rollout.engine", "rollout.in_process",
    "rollout.gpu_memory_utilization", "rollout.enforce_eager", "rollout.sync_check_every",
    "rl.micro_batch_size", "rl.micro_batch_tokens", "rl.pass_overhead_tokens", "rl.pack_sequences",
    *(f"cluster.{key}" for key in ClusterConfig.model_fields),
})
"""Keys that say where or with what resources a stage runs, not what it computes: changing them
leaves a finished stage current. How an RL mini-batch is cut into passes is among them: the update
is the same however it is cut (docs/algorithms.md §4, up to float rounding)."""

INPUTS_FILE = "inputs.json"
MARKER_FILE = "metrics.json"
HASH_KEY = "config_hash"
"""In the finished marker and in inputs.json: `inputs_hash` of the config the stage ran with."""


def _flatten(value: Any, prefix: str, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", into)
    elif prefix not in NOT_HASHED:
        into[prefix] = value


def stage_inputs(config: Config, command: str) -> dict[str, Any]:
    """`section.key` -> value for every config key the stage `command` reads (COMMON_KEYS and its
    sections in stages/catalog.py), less NOT_HASHED; presets are applied (algorithm keys resolved)."""
    data = config.model_dump(mode="json")
    inputs: dict[str, Any] = {}
    for part in (*COMMON_KEYS, *STAGES[command].sections):
        section, _, key = part.partition(".")
        _flatten(data[section][key] if key else data[section], part, inputs)
    return inputs


def inputs_hash(inputs: dict[str, Any]) -> str:
    """A short stable hash of `stage_inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key (old -> new)` for every key whose value differs or that only one side has."""
    def shown(values: dict[str, Any], key: str) -> str:
        return repr(values[key]) if key in values else "unset"

    return [f"{key} ({shown(recorded, key)} -> {shown(current, key)})"
            for key in sorted(recorded.keys() | current.keys())
            if key not in recorded or key not in current or recorded[key] != current[key]]


class Chain:
    def __init__(self, config: Config, overwrite: bool = False):
        """`overwrite`: re-run stages whose recorded config differs, and the ones after them (else refuse)."""
        self.config = config
        self.out = Path(config.output_dir)
        self.overwrite = overwrite
        self.manifest_path = self.out / "manifest.json"
        self.manifest: dict[str, Any] = {"config": config.model_dump(), "git_commit": _git_commit()}
        self.rerun = False  # set once a stage runs: every later stage runs too (its inputs changed)

    def folder(self, command: str) -> Path:
        return self.out / STAGES[command].folder

    def stale(self) -> dict[str, list[str]]:
        """Stage -> changed keys, for each stage whose finished results (or, for RL, the checkpoints
        it would resume) were made with other config values than the current ones. Reads only."""
        stale = {}
        for command in CHAIN:
            if STAGES[command].folder is None:
                continue
            folder, current = self.folder(command), stage_inputs(self.config, command)
            record = folder / INPUTS_FILE
            recorded = json.loads(record.read_text())["keys"] if record.is_file() else None
            if (folder / MARKER_FILE).is_file():
                if json.loads((folder / MARKER_FILE).read_text()).get(HASH_KEY) == inputs_hash(current):
                    continue
            elif not (STAGES[command].resumes and latest_checkpoint(folder) is not None):
                continue  # nothing reused: the stage runs from scratch
            if recorded is None:
                stale[command] = [f"no {INPUTS_FILE}: made outside `rlvr run`, with unknown config"]
            elif changed := changed_keys(recorded, current):
                stale[command] = changed
            elif (folder / MARKER_FILE).is_file():
                stale[command] = [f"its {MARKER_FILE} and {INPUTS_FILE} disagree"]
        return stale

    def check(self) -> str | None:
        """The first stage to re-run (with `overwrite`), or None; raises ConfigError naming the
        changed keys when stages are stale and `overwrite` is off."""
        stale = self.stale()
        if stale and not self.overwrite:
            listed = "; ".join(f"{command}: {', '.join(keys)}" for command, keys in stale.items())
            raise ConfigError(f"{self.out} holds stages made with another config ({listed}); pass --overwrite "
                              f"to re-run them and the stages after them, or choose another output_dir")
        return next(iter(stale), None)

    def stage(self, command: str, run: Callable[[], dict[str, Any]], first_rerun: str | None) -> dict[str, Any]:
        """Run `command` unless it finished with the current config; record its inputs when it
        starts and its metrics (the finished marker) when it ends; add them to the manifest."""
        folder = self.folder(command)
        done = folder / MARKER_FILE
        self.rerun = self.rerun or command == first_rerun
        if done.is_file() and not self.rerun:
            log.info("%s: finished earlier (%s), skipping", command, done)
            metrics = json.loads(done.read_text())
            metrics.pop(HASH_KEY, None)
        else:
            log.info("%s: starting", command)
            self.rerun = True
            inputs = stage_inputs(self.config, command)
            folder.mkdir(parents=True, exist_ok=True)
            done.unlink(missing_ok=True)  # the checks passed: an earlier run's marker would not match
            write_json_atomic(folder / INPUTS_FILE, {HASH_KEY: inputs_hash(inputs), "keys": inputs})
            metrics = run()
            write_json_atomic(done, {**metrics, HASH_KEY: inputs_hash(inputs)})
        self.manifest[STAGES[command].folder] = metrics
        write_json_atomic(self.manifest_path, self.manifest)
        return metrics

    def run(self) -> dict[str, Any]:
        config = self.config
        first = self.check()
        self.out.mkdir(parents=True, exist_ok=True)
        model_path = prepare_model.main_with(config)
        self.manifest["prepare_model"] = {"path": model_path}
        sft_output = self.stage("sft", lambda: sft.main_with(config), first)["output"]
        tuned = starting_from(config, sft_output)
        pairs = self.stage("reward-model", lambda: reward_model.main_with(tuned), first)["pairs_file"]
        dpo_output = self.stage("dpo", lambda: dpo.main_with(with_dpo_pairs(tuned, pairs)), first)["output"]
        # RL resumes its own checkpoints after a crash, unless an earlier stage (or it) re-runs now
        resume_rl = not self.rerun and first != "rl"
        rl_metrics = self.stage("rl", lambda: rl.run(tuned, resume=resume_rl), first)
        checkpoints = {"base": None, "sft": sft_output, "dpo": dpo_output, "rl": rl_metrics["output"]}
        summaries = self.stage("eval", lambda: evaluate.run_eval(config, checkpoints, reference="sft"), first)
        print(accuracy_table(summaries))
        return self.manifest


def accuracy_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Held-out accuracy after each stage (`value ± stderr` over problems) as a Markdown table, with
    each stage's avg@n difference from the reference stage and its paired 95% interval (§11)."""
    first = next(iter(summaries.values()))
    keys = [k for k in first if k.startswith(("avg@", "pass@", "maj@"))]
    paired = next((s[PAIRED] for s in summaries.values() if PAIRED in s), None)
    headline = f"avg@{first['n']}"
    extra = [f"{headline} - {paired['reference']} [95% CI]"] if paired else []
    lines = ["| stage | " + " | ".join(keys + ["mean length"] + extra) + " |",
             "|---" * (len(keys) + 2 + len(extra)) + "|"]
    for stage, summary in summaries.items():
        cells = [format_with_error(summary[k], summary.get(STDERR, {}).get(k)) for k in keys]
        cells.append(f"{summary.get('mean_length', 0):.0f}")
        if paired:
            d = summary.get(PAIRED, {}).get("metrics", {}).get(headline)
            cells.append(format_difference(d) if d else "reference" if stage == paired["reference"] else "")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_with(config: Config, args: argparse.Namespace | None = None) -> dict[str, Any]:
    if args is not None and args.resume:
        log.info("rlvr run always continues the chain in %s; --resume changes nothing", config.output_dir)
    return Chain(config, overwrite=args is not None and args.overwrite).run()


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("run")  # its description: the chain in stages/catalog.py, as in `rlvr --help`
    run_stage(main_with, parser, argv)


if __name__ == "__main__":
    main()
