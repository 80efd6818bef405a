"""Typed configuration: one schema for every stage, loaded from YAML, overridable from the CLI.

    cfg = load_config("configs/grpo.yaml", ["rl.lr=2e-6", "algorithm.preset=dapo"])

Unknown keys and bad values raise `ConfigError` naming the key (and the closest valid key).
The `algorithm` section starts from a named preset (pipeline/presets.py); any key the user
sets overrides the preset's value for that key only.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.presets import PRESETS

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math solver. Think step by step, briefly, then give the final "
    "answer as \\boxed{answer}."
)


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = "smollm2-135m-instruct"
    """Default alias, a local HF folder, a .gguf file, or a hub id."""
    cache_dir: str = "models"
    adapter: str | None = None
    """Start from this LoRA adapter folder (e.g. the SFT stage's output)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Learner weights' dtype; `rl.bf16_autocast` speeds up matmuls where bf16 is native."""


class LoraConfig(Section):
    enabled: bool = True
    """False means full fine-tuning."""
    rank: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class DataConfig(Section):
    train: str = "datasets/train.jsonl"
    """A JSONL/Parquet path, a hub dataset name, or `reasoning_gym/<task>` (drawn on the fly)."""
    test: str = "datasets/test.jsonl"
    split: str = "train"
    preset: Literal["auto", "rlvr", "gsm8k", "math", "aime"] = "auto"
    """Column mapping preset; `auto` picks one from the columns present."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Explicit mapping of our field names (problem, answer, solution) to the file's columns."""
    levels: list[int] | None = None
    sources: list[str] | None = None
    limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    gym_size: int = Field(1000, ge=1)
    """Problems drawn per epoch from a reasoning_gym generator."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_prompt_tokens: int = Field(384, ge=8)


class RolloutConfig(Section):
    engine: Literal["auto", "vllm", "hf"] = "auto"
    sync: Literal["auto", "adapter", "merged"] = "auto"
    """How learner weights reach the engine each step; `auto` picks per device."""
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = -1
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bfloat16 where the device computes it natively (GPU, AMX/AVX-512 BF16 CPU), else float32."""
    gpu_memory_utilization: float = Field(0.15, gt=0.0, le=1.0)
    """On CPU: the share of RAM vLLM reserves for its KV cache."""
    max_model_len: int = Field(1024, ge=16)
    enforce_eager: bool = True
    in_process: bool | Literal["auto"] = "auto"
    """Run vLLM's scheduler and model worker inside the trainer's process. `auto`: yes on CPU, where
    the separate scheduler process busy-polls a core the worker needs (1.7x tokens/s measured on
    2 cores), no on GPU, where separate processes overlap scheduling with the GPU's work."""
    max_lora_rank: int = Field(16, ge=1)
    sync_check: bool = False
    """Verify engine/learner log-prob agreement after each sync (slow; for debugging)."""


AdvantageName = Literal["grpo", "dr_grpo", "rloo", "reinforce", "gae"]
PolicyLossName = Literal["ppo_clip", "dapo", "gspo", "gspo_token", "sapo"]
AggName = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


class AlgorithmConfig(Section):
    """docs/algorithms.md §1-9. Fields left unset take the preset's value."""

    preset: str = "grpo"
    advantage: AdvantageName = "grpo"
    reinforce_baseline: bool = False
    policy_loss: PolicyLossName = "ppo_clip"
    loss_agg: AggName = "seq-mean-token-mean"
    eps: float = Field(0.2, gt=0.0)
    eps_low: float | None = Field(None, gt=0.0)
    eps_high: float | None = Field(None, gt=0.0)
    dual_clip_c: float | None = Field(None, gt=1.0)
    tau_pos: float = Field(1.0, gt=0.0)
    tau_neg: float = Field(1.05, gt=0.0)
    kl_coef: float = Field(0.0, ge=0.0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    kl_in_reward: bool = False
    entropy_coef: float = Field(0.0, ge=0.0)
    tis: Literal["none", "token_truncate", "sequence_mask"] = "token_truncate"
    tis_cap: float = Field(2.0, gt=1.0)
    dynamic_sampling: bool = False
    max_num_gen_batches: int = Field(3, ge=1)
    overlong_filter: bool = False
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(0.95, ge=0.0, le=1.0)
    value_clip: float = Field(0.2, gt=0.0)
    vf_coef: float = Field(0.5, ge=0.0)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {**PRESETS.get(data.get("preset", "grpo"), {}), **data}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
        return name


class RewardTerm(Section):
    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class RewardConfig(Section):
    terms: list[RewardTerm] = Field(
        default_factory=lambda: [RewardTerm(name="accuracy"), RewardTerm(name="format", weight=0.1)]
    )
    workers: int = Field(2, ge=1)
    timeout: float = Field(5.0, gt=0.0)
    """Hard wall-clock limit per verification, seconds."""


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    bf16_autocast: bool | Literal["auto"] = "auto"
    """bf16 autocast for forward/backward; `auto` turns it on where bf16 is native (GPU, AMX CPU).
    Weights and optimiser state stay fp32."""


class RLConfig(OptimConfig):
    lr: float = Field(2e-5, gt=0.0)
    steps: int = Field(20, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=1)
    """G: completions sampled per prompt."""
    mini_batch_size: int = Field(64, ge=1)
    """Completions per optimiser step."""
    micro_batch_size: int = Field(16, ge=1)
    """Completions per forward/backward pass (gradient accumulation within a mini-batch)."""
    ppo_epochs: int = Field(1, ge=1)
    skip_zero_advantage: bool = True
    """Skip the forward/backward of rows that add exactly zero gradient (advantage 0 and no KL,
    entropy or value term in the loss); the update is unchanged, only faster."""
    levels: list[int] | None = None
    """Only problems of these levels for RL (its training and periodic evaluation); None = data.levels.
    E.g. SFT on levels 1-2 and RL on level 1, where the SFT model is right often enough to learn from."""
    eval_every: int = Field(10, ge=0)
    """Evaluate on the held-out set every N steps (0 = never); step 0 and the last step included."""
    eval_problems: int = Field(100, ge=1)
    eval_samples: int = Field(4, ge=1)
    eval_temperature: float = Field(0.6, ge=0.0)
    save_every: int = Field(10, ge=0)
    """Save a resumable checkpoint `rl/checkpoint-<step>/` every N steps (0 = only after the last step)."""
    keep_checkpoints: int | None = Field(2, ge=1)
    """How many of this run's checkpoints to keep (the newest; None = all). Another run's
    checkpoints in the same folder are never deleted; `rl/final/` is kept besides these."""

    @model_validator(mode="after")
    def _check_batches(self) -> RLConfig:
        total = self.prompts_per_step * self.group_size
        if total % self.mini_batch_size:
            raise ValueError(
                f"rl.mini_batch_size={self.mini_batch_size} must divide "
                f"rl.prompts_per_step*rl.group_size={total}"
            )
        if self.mini_batch_size % self.micro_batch_size:
            raise ValueError(
                f"rl.micro_batch_size={self.micro_batch_size} must divide "
                f"rl.mini_batch_size={self.mini_batch_size}"
            )
        return self


class SFTConfig(OptimConfig):
    lr: float = Field(2e-4, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(8, ge=1)
    micro_batch_size: int = Field(8, ge=1)
    max_length: int = Field(512, ge=16)
    packing: bool = False
    eval_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    max_examples: int | None = Field(None, ge=1)


class RewardModelConfig(OptimConfig):
    lr: float = Field(1e-4, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(512, ge=16)
    pairs: str | None = None
    """A preference file with prompt/chosen/rejected columns; None = build pairs by sampling."""
    num_problems: int = Field(256, ge=1)
    samples_per_problem: int = Field(4, ge=2)
    pairs_per_problem: int = Field(4, ge=1)
    """Sampled pairs: at most this many (correct, wrong) combinations of one problem's samples."""
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class DPOConfig(RewardModelConfig):
    lr: float = Field(5e-5, gt=0.0)
    beta: float = Field(0.1, gt=0.0)


class EvalConfig(Section):
    dataset: str = "datasets/test.jsonl"
    """A path, a hub dataset, or a preset name: rlvr-test, aime24, aime25, math500, gsm8k."""
    split: str = "test"
    levels: list[int] | None = None
    """Only problems of these difficulty levels (like `data.levels`); None = all."""
    problems: int | None = Field(None, ge=1)
    n: int = Field(4, ge=1)
    """Samples per problem; n=1 decodes greedily."""
    k: list[int] = Field(default_factory=lambda: [1, 4])
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    seed: int = 0
    compare: list[str] = Field(default_factory=list)
    """Checkpoints (adapter folders) to evaluate side by side with the base model."""


class Config(Section):
    output_dir: str = "runs/demo"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_algorithm(self) -> Config:
        if self.algorithm.advantage in ("grpo", "dr_grpo", "rloo") and self.rl.group_size < 2:
            raise ValueError(
                f"rl.group_size={self.rl.group_size}: advantage {self.algorithm.advantage!r} "
                "compares completions within a group and needs rl.group_size >= 2"
            )
        return self


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys.extend(_valid_keys(sub, f"{prefix}{name}."))
    return keys


def _explain(error: ValidationError) -> str:
    lines = []
    valid = _valid_keys(Config)
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown key {key!r}{hint}")
        else:
            where = f"{key}: " if key else ""
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where}{message} (got {item.get('input')!r})")
    return "; ".join(lines)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `a.b=value` strings into a nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[leaf] = _parse_scalar(raw)
    return tree


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _parse_scalar(raw: str) -> Any:
    """YAML parsing, plus `2e-6` as a float (YAML 1.1 reads exponents without a dot as text)."""
    value = yaml.safe_load(raw) if raw else ""
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        return float(value)
    return value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML recipe (optional), apply `key=value` overrides, validate everything."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    data = _merge(data, parse_overrides(overrides or []))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        source = f"{path}: " if path is not None else ""
        raise ConfigError(source + _explain(exc)) from None


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
