"""The stages: command name, module, what each does, which config sections it reads, what it writes.

One table used by `rlvr --help`, each stage's `--help` and `--print-config`, and by `rlvr run`,
which hashes the sections a stage reads to tell whether a finished stage is still current.
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
    resumes: bool = False
    """Whether `--resume` continues an interrupted run (else the stage has nothing to resume)."""


STAGES: dict[str, Stage] = {s.command: s for s in (
    Stage("prepare-model", "stages.prepare_model", None, "convert the model reference to a local folder",
          ("model",), ("<model.cache_dir>/<name>/",)),
    Stage("sft", "stages.sft", "sft", "supervised fine-tuning on worked solutions",
          ("model", "lora", "data", "rollout", "reward", "sft"), ("sft/adapter/ (or sft/model/)", "sft/metrics.json")),
    Stage("reward-model", "stages.reward_model", "reward_model", "train a Bradley-Terry reward model",
          ("model", "lora", "data", "rollout", "reward", "reward_model"),
          ("reward_model/model/", "reward_model/pairs.jsonl", "reward_model/metrics.json")),
    Stage("dpo", "stages.dpo", "dpo", "direct preference optimisation",
          ("model", "lora", "data", "rollout", "reward", "dpo"), ("dpo/adapter/ (or dpo/model/)", "dpo/metrics.json")),
    Stage("rl", "stages.rl", "rl", "GRPO-family RL with verifiable rewards",
          ("model", "lora", "data", "rollout", "algorithm", "reward", "rl", "eval.top_p"),
          ("rl/checkpoint-<step>/", "rl/final/adapter/ (or rl/final/model/)", "rl/metrics.jsonl", "rl/metrics.json",
           "rl/tensorboard/"), resumes=True),
    Stage("eval", "stages.evaluate", "eval", "AIME-style evaluation: avg@n, pass@k, maj@k",
          ("model", "data", "rollout", "reward", "eval"),
          ("eval/report.json", "eval/summary.md", "eval/compare.md")),
    Stage("export", "stages.export", "export", "merge an adapter into a standalone model folder (transformers, vLLM)",
          ("model",), ("export/model/", "export/source.json")),
)}

CHAIN = ("prepare-model", "sft", "reward-model", "dpo", "rl", "eval")
"""What `rlvr run` runs, in order."""
