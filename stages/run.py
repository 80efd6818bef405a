"""`rlvr run`: prepare-model, sft, reward-model, dpo, rl and eval in order, resumable.

The reward model and DPO start from SFT's output and learn from the same preference pairs
(sampled once by the reward-model stage unless `reward_model.pairs` / `dpo.pairs` name files);
RL starts from SFT's output too, and eval compares base, SFT, DPO and RL on the same problems
(each with its paired difference from SFT, the stage DPO and RL start from).

A stage whose `<output_dir>/<stage>/metrics.json` exists is finished and skipped, so an
interrupted chain picks up where it stopped (RL itself resumes from its last checkpoint).
Every stage's metrics and paths go into `<output_dir>/manifest.json` under the stage's name
(e.g. `reward_model.pairwise_accuracy`), with the config and the git commit.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.evaluation import PAIRED, STDERR, format_difference, format_with_error
from pipeline.models import is_adapter
from stages import dpo, evaluate, prepare_model, reward_model, rl, sft
from stages.common import run_stage, stage_parser, write_json_atomic

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


class Chain:
    def __init__(self, config: Config):
        self.config = config
        self.out = Path(config.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.out / "manifest.json"
        self.manifest: dict[str, Any] = {"config": config.model_dump(), "git_commit": _git_commit()}

    def stage(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run `name` unless its metrics.json exists; record its metrics in the manifest."""
        done = self.out / name / "metrics.json"
        if done.is_file():
            log.info("%s: finished earlier (%s), skipping", name, done)
            metrics = json.loads(done.read_text())
        else:
            log.info("%s: starting", name)
            metrics = run()
            write_json_atomic(done, metrics)
        self.manifest[name] = metrics
        write_json_atomic(self.manifest_path, self.manifest)
        return metrics

    def run(self) -> dict[str, Any]:
        config = self.config
        model_path = prepare_model.main_with(config)
        self.manifest["prepare_model"] = {"path": model_path}
        sft_output = self.stage("sft", lambda: sft.main_with(config))["output"]
        tuned = starting_from(config, sft_output)
        pairs = self.stage("reward_model", lambda: reward_model.main_with(tuned))["pairs_file"]
        dpo_output = self.stage("dpo", lambda: dpo.main_with(with_dpo_pairs(tuned, pairs)))["output"]
        rl_metrics = self.stage("rl", lambda: rl.run(tuned, resume=True))
        checkpoints = {"base": None, "sft": sft_output, "dpo": dpo_output, "rl": rl_metrics["adapter"]}
        summaries = self.stage("eval", lambda: evaluate.run_eval(config, checkpoints, reference="sft"))
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
    return Chain(config).run()


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("run")  # its description: the chain in stages/catalog.py, as in `rlvr --help`
    run_stage(main_with, parser, argv)


if __name__ == "__main__":
    main()
