"""The stages: command name, module, what each does, which config sections it reads, what it writes.

One table used by `rlvr --help`, each stage's `--help`, `--print-config` and `--dry-run`, and by
`rlvr run`, which hashes the sections a stage reads to tell whether a finished stage is still current.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON_KEYS = ("output_dir", "seed", "device")
"""Top-level keys every stage reads."""


@dataclass(frozen=True)
class Stage:
    command: str
    """`rlvr <command>`."""
    module: str
    """Module with `main(argv)`; also runnable as `python -m <module>`."""
    folder: str | None
    """Output folder under `output_dir` (None: the stage writes no folder of its own)."""
    summary: str
    sections: tuple[str, ...]
    """Config sections the stage reads (besides COMMON_KEYS): a section name, or `section.key`
    where it reads one key of another stage's section."""
    writes: tuple[str, ...]
    """Files and folders it writes, relative to `output_dir`."""
    section: str | None = None
    """The stage's own config section (its learning rate, batch sizes, ...); None: it has none."""
    resumes: bool = False
    """Whether `--resume` continues an interrupted run (else the stage has nothing to resume)."""


STAGES: dict[str, Stage] = {s.command: s for s in (
    Stage("prepare-model", "stages.prepare_model", None, "convert the model reference to a local folder",
          ("model",), ("<model.cache_dir>/<name>/ (not under output_dir)",)),
    Stage("sft", "stages.sft", "sft", "supervised fine-tuning on worked solutions",
          ("model", "lora", "data", "rollout", "reward", "sft"),
          ("sft/adapter/ (or sft/model/)", "sft/config.yaml", "sft/metrics.jsonl", "sft/metrics.json"), "sft"),
    Stage("reward-model", "stages.reward_model", "reward_model", "train a Bradley-Terry reward model",
          ("model", "lora", "data", "rollout", "reward", "reward_model"),
          ("reward_model/model/", "reward_model/pairs.jsonl", "reward_model/config.yaml",
           "reward_model/metrics.jsonl", "reward_model/metrics.json"), "reward_model"),
    Stage("dpo", "stages.dpo", "dpo", "direct preference optimisation",
          ("model", "lora", "data", "rollout", "reward", "dpo"),
          ("dpo/adapter/ (or dpo/model/)", "dpo/pairs.jsonl", "dpo/config.yaml", "dpo/metrics.jsonl",
           "dpo/metrics.json"), "dpo"),
    Stage("rl", "stages.rl", "rl", "GRPO-family RL with verifiable rewards",
          ("model", "lora", "data", "rollout", "algorithm", "reward", "rl", "cluster"),
          ("rl/checkpoint-<step>/", "rl/final/adapter/ (or rl/final/model/)", "rl/config.yaml", "rl/metrics.jsonl",
           "rl/completions.jsonl", "rl/metrics.json", "rl/tensorboard/"), "rl", resumes=True),
    Stage("eval", "stages.evaluate", "eval", "AIME-style evaluation: avg@n, pass@k, maj@k",
          ("model", "data", "rollout", "reward", "eval"),
          ("eval/report.json", "eval/summary.md",
           "with --compare: eval/<label>/, eval/compare.md, eval/compare.json, eval/compare.png"),
          "eval"),
    Stage("export", "stages.export", "export", "merge an adapter into a standalone model folder (transformers, vLLM)",
          ("model",), ("export/model/", "export/source.json")),
)}

CHAIN = ("prepare-model", "sft", "reward-model", "dpo", "rl", "eval")
"""What `rlvr run` runs, in order."""

RUN = Stage(
    "run", "stages.run", None, "the whole chain: " + ", ".join(CHAIN),
    tuple(dict.fromkeys(section for name in CHAIN for section in STAGES[name].sections)),
    ("manifest.json", *(path for name in CHAIN for path in STAGES[name].writes)),
)
"""`rlvr run`: reads what its stages read and writes what they write, plus the manifest."""

COMMANDS: dict[str, Stage] = {**STAGES, "run": RUN}
"""Every `rlvr` subcommand."""
