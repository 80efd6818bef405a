"""The `rlvr` command: one subcommand per stage, each also `python -m stages.<name>`."""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "prepare-model": ("stages.prepare_model", "convert the model reference to a local folder"),
    "sft": ("stages.sft", "supervised fine-tuning on worked solutions"),
    "reward-model": ("stages.reward_model", "train a Bradley-Terry reward model"),
    "rl": ("stages.rl", "GRPO-family RL with verifiable rewards"),
    "dpo": ("stages.dpo", "direct preference optimisation"),
    "eval": ("stages.evaluate", "AIME-style evaluation: avg@n, pass@k, maj@k"),
    "run": ("stages.run", "the whole chain: prepare-model, sft, reward-model, rl, eval"),
}


def usage() -> str:
    lines = ["usage: rlvr STAGE [CONFIG.yaml] [section.key=value ...]", "", "stages:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in STAGES.items()]
    lines += ["", "Run `rlvr STAGE --help` for a stage's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.exit(f"rlvr: unknown stage {stage!r}\n\n{usage()}")
    module = importlib.import_module(STAGES[stage][0])
    module.main(rest)


if __name__ == "__main__":
    main()
