"""Typed configuration: one schema for every stage, loaded from YAML, overridable from the CLI.

    cfg = load_config("configs/grpo.yaml", ["rl.lr=2e-6", "algorithm.preset=dapo"])

Unknown keys and bad values raise `ConfigError` naming the key (and the closest valid key).
The `algorithm` section starts from a named preset (pipeline/algorithms/presets.py); any key the user
sets overrides the preset's value for that key only.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from pipeline.algorithms.correction import CORRECTIONS, CorrectionSettings, TokenTruncateSettings
from pipeline.algorithms.policy_losses import POLICY_LOSSES, PolicyLossSettings, PPOClipSettings
from pipeline.algorithms.presets import ALGORITHM_PRESETS

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math solver. Think step by step, briefly, then give the final "
    "answer as \\boxed{answer}."
)


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class DataError(ValueError):
    """Bad or missing data; the message says where (file, line, field) and what to do."""


class Section(BaseModel):
    # Each field's docstring becomes its description: `rlvr <stage> --help` and `--print-config` show it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelConfig(Section):
    """The base model and the checkpoint a stage starts from."""

    name: str = "smollm2-135m-instruct"
    """Default alias, a local HF folder, a .gguf file, or a hub id."""
    cache_dir: str = "models"
    """Where converted (.gguf) and downloaded (hub) models are kept."""
    adapter: str | None = None
    """Start from this LoRA adapter folder (e.g. the SFT stage's output); it must hold adapter_config.json."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Learner weights' dtype; `rl.bf16_autocast` speeds up matmuls where bf16 is native."""


class LoraConfig(Section):
    """The LoRA adapter trained by SFT, the reward model, DPO and RL (peft)."""

    enabled: bool = True
    """False means full fine-tuning."""
    rank: int = Field(16, ge=1)
    """r: the rank of the low-rank update B @ A."""
    alpha: int = Field(32, ge=1)
    """lora_alpha: the update is scaled by alpha / rank."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter's input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names that get an adapter (e.g. [q_proj, v_proj]), or every linear layer but the LM head."""


class DataConfig(Section):
    """Training and held-out problems (pipeline/data/problems.py)."""

    train: str = "datasets/train.jsonl"
    """A JSONL/Parquet path, a hub dataset name, or `reasoning_gym/<task>` (drawn on the fly)."""
    test: str = "datasets/test.jsonl"
    """Held-out problems for the stages' own evaluations (same forms as `train`; a hub dataset's "test" split)."""
    split: str = "train"
    """The split of a hub dataset named by `train`."""
    preset: Literal["auto", "rlvr", "gsm8k", "math", "aime"] = "auto"
    """Column mapping preset; `auto` picks one from the columns present."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Explicit mapping of our field names (problem, answer, solution, level, source) to the file's columns."""
    levels: list[int] | None = None
    """Only problems of these difficulty levels (1-5); None = all."""
    sources: list[str] | None = None
    """Only problems of these sources (a source also matches its sub-sources); None = all."""
    limit: int | None = Field(None, ge=1)
    """A seeded random subset of this many training problems; None = all."""
    test_limit: int | None = Field(None, ge=1)
    """A seeded random subset of this many held-out problems; None = all."""
    gym_size: int = Field(1000, ge=1)
    """Problems drawn per epoch from a reasoning_gym generator."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """The system message of every prompt (rendered with the model's chat template)."""
    max_prompt_tokens: int = Field(384, ge=8)
    """Prompts longer than this many tokens are dropped (TRL's max_prompt_length)."""


class RolloutConfig(Section):
    """Sampling completions: the engine, its decoding settings and the learner -> engine weight sync."""

    engine: Literal["auto", "vllm", "hf"] = "auto"
    """`auto`: vLLM when installed, else Hugging Face `generate`."""
    sync: Literal["auto", "adapter", "merged"] = "auto"
    """How learner weights reach the engine each step; `auto` picks per device."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature; 0 decodes greedily (refused for RL with rl.group_size > 1)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest token set of this much probability (1 = off)."""
    top_k: int = -1
    """Top-k / top-p truncation of the sampling distribution (-1 / 1.0: off). The learner
    computes its log-probs on the same truncated distribution (pipeline/core/forward.py)."""
    max_tokens: int = Field(256, ge=1)
    """Most new tokens per completion (TRL's max_completion_length)."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end a completion (besides the EOS token)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bfloat16 where the device computes it natively (GPU, AMX/AVX-512 BF16 CPU), else float32."""
    gpu_memory_utilization: float = Field(0.15, gt=0.0, le=1.0)
    """Share of GPU memory vLLM may use; on CPU: the share of RAM vLLM reserves for its KV cache."""
    max_model_len: int = Field(1024, ge=16)
    """vLLM's context length: prompt plus completion tokens."""
    enforce_eager: bool = True
    """Run vLLM without CUDA graphs (faster start, slower decoding on GPU)."""
    in_process: bool | Literal["auto"] = "auto"
    """Run vLLM's scheduler and model worker inside the trainer's process. `auto`: yes on CPU, where
    the separate scheduler process busy-polls a core the worker needs (1.7x tokens/s measured on
    2 cores), no on GPU, where separate processes overlap scheduling with the GPU's work."""
    max_lora_rank: int = Field(16, ge=1)
    """Largest LoRA rank the engine accepts with `sync: adapter` (at least `lora.rank`)."""
    sync_check_every: int = Field(10, ge=0)
    """Every N weight syncs, check that the engine's log-probs of a fixed completion at T = 1 match the
    learner's (mean |dlogp| < 0.05 nats) and stop the run with an error if not; 0 turns the check off."""


AdvantageName = Literal["grpo", "dr_grpo", "rloo", "reinforce", "gae"]
"""The estimators of pipeline/algorithms/advantages.py's registry (a test keeps the two equal)."""
GROUP_ADVANTAGES = ("grpo", "dr_grpo", "rloo")
AggName = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
TYPED_KEYS: dict[str, dict[str, Any]] = {"policy_loss": POLICY_LOSSES, "correction": CORRECTIONS}
"""`algorithm` keys whose settings are typed, selected by `type` (a bare name allowed) -> their registry."""


class AlgorithmConfig(Section):
    """docs/algorithms.md §1-9. Fields left unset take the preset's value; the policy loss's own
    settings take its paper's defaults (pipeline/algorithms/policy_losses.py)."""

    preset: str = "grpo"
    """A paper's recipe (pipeline/algorithms/presets.py): grpo, dr_grpo, dapo, gspo, gspo_token, sapo, ppo, reinforce, rloo."""
    advantage: AdvantageName = "grpo"
    """Advantage estimator (§1): group mean/std (grpo), group mean (dr_grpo), leave-one-out (rloo), batch baseline (reinforce), GAE with a critic (gae)."""
    reinforce_baseline: bool = False
    """`reinforce`: subtract the batch-mean reward (§1)."""
    policy_loss: PolicyLossSettings = Field(default_factory=PPOClipSettings)
    """The policy loss and its settings, e.g. `{type: dapo, eps_high: 0.3}` (a bare name selects
    the loss with its defaults)."""
    loss_agg: AggName = "seq-mean-token-mean"
    """How token losses become one number (§4): token-mean (DAPO), seq-mean-token-mean (GRPO), seq-mean-token-sum-norm (Dr.GRPO)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """beta: weight of the KL penalty to the reference policy (§5; 0 = no reference pass)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (§5): k1 = log-ratio, k2 = half its square, k3 = the unbiased low-variance one."""
    kl_in_reward: bool = False
    """Put the KL penalty into the reward (PPO/RLHF style) instead of the loss (§5)."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Weight of the entropy bonus (§6)."""
    correction: CorrectionSettings = Field(default_factory=TokenTruncateSettings)
    """Off-policy correction of the policy loss for the engine's samples (§9): truncate or mask the
    importance ratio per token or per sequence, e.g. `{type: token_mask, lower: 0.5, upper: 5.0}`
    (a bare name selects the variant with its defaults)."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling (§8): drop groups whose rewards are all equal and sample more."""
    max_num_gen_batches: int = Field(3, ge=1)
    """Dynamic sampling: at most this many generation rounds per step."""
    overlong_filter: bool = False
    """Mask completions cut at `rollout.max_tokens` out of the loss (DAPO; TRL's mask_truncated_completions)."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """GAE discount (§1)."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE lambda (§1)."""
    value_clip: float = Field(0.2, gt=0.0)
    """Clip range of the critic's value update (PPO's clipped value loss)."""
    vf_coef: float = Field(0.5, ge=0.0)
    """Weight of the value loss (advantage `gae`)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {**ALGORITHM_PRESETS.get(data.get("preset", "grpo"), {}), **data}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in ALGORITHM_PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(ALGORITHM_PRESETS))}")
        return name

    @field_validator(*TYPED_KEYS, mode="before")
    @classmethod
    def _typed_over_preset(cls, given: Any, info: ValidationInfo) -> Any:
        key = info.field_name
        preset = ALGORITHM_PRESETS.get(info.data.get("preset", "grpo"), {})
        default = cls.model_fields[key].default_factory().type
        return _typed_settings(key, default, preset.get(key), given)

    @model_validator(mode="after")
    def _check_kl_in_reward(self) -> AlgorithmConfig:
        if self.kl_in_reward and self.kl_coef > 0 and not self.uses_critic:
            raise ValueError("kl_in_reward puts the KL penalty into per-token rewards, which only the "
                             "'gae' advantage reads; use it with advantage: gae, or set kl_in_reward: false")
        return self

    # Decisions derived from the settings, made here once.
    @property
    def uses_critic(self) -> bool:
        """A value head is trained (GAE advantages, PPO)."""
        return self.advantage == "gae"

    @property
    def group_advantage(self) -> bool:
        """Advantages compare completions of one prompt (needs group_size >= 2)."""
        return self.advantage in GROUP_ADVANTAGES

    @property
    def needs_reference(self) -> bool:
        """The reference policy's log-probs are computed (a KL term, §5)."""
        return self.kl_coef > 0

    @property
    def kl_loss_coef(self) -> float:
        """The KL coefficient in the loss (0 when the KL penalty is in the reward instead)."""
        return 0.0 if self.kl_in_reward else self.kl_coef

    @property
    def advantage_only_loss(self) -> bool:
        """Every loss term is a multiple of the advantage (no KL in the loss, entropy or value term):
        rows with A = 0 add exactly zero gradient (§13)."""
        return self.entropy_coef == 0 and not self.uses_critic and self.kl_loss_coef == 0


def _typed_settings(key: str, default: str, preset: dict[str, Any] | None, given: Any) -> Any:
    """The user's `algorithm.<key>` (a name or a mapping with `type`; key in TYPED_KEYS) over the
    preset's: the preset's settings apply only when the user keeps its type; a key the chosen type
    does not use is an error. `default` is the type when neither side names one."""
    if isinstance(given, str):
        given = {"type": given}
    if not isinstance(given, dict):
        return given
    registry, noun = TYPED_KEYS[key], key.split("_")[-1]  # "loss", "correction"
    preset = preset or {}
    name = given.get("type", preset.get("type", default))
    if name not in registry:
        raise ValueError(f"unknown {key.replace('_', ' ')} {name!r}; valid: {', '.join(registry)}")
    fields = registry[name].settings.model_fields
    unknown = sorted(set(given) - set(fields))
    if unknown:
        own = ", ".join(k for k in fields if k != "type") or "(none)"
        raise ValueError(f"the {name!r} {noun} has no setting {', '.join(map(repr, unknown))}; "
                         f"its settings: {own}")
    base = preset if preset.get("type", default) == name else {}
    return {**base, **given, "type": name}


class RewardTerm(Section):
    """One term of the reward: a registered reward function, its weight and parameters."""

    name: str
    """A registered reward (accuracy, format, soft_overlong, code, reward_model, or your own)."""
    weight: float = 1.0
    """Multiplies the term's score in the total reward."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the reward's factory (docs/rewards.md)."""


class RewardConfig(Section):
    """The verifiable reward: a weighted sum of terms (docs/rewards.md)."""

    terms: list[RewardTerm] = Field(
        default_factory=lambda: [RewardTerm(name="accuracy"), RewardTerm(name="format", weight=0.1)]
    )
    """Reward terms, summed by weight (TRL's reward_funcs and reward_weights)."""
    workers: int = Field(2, ge=1)
    """Worker processes that verify answers in parallel."""
    timeout: float = Field(5.0, gt=0.0)
    """Hard wall-clock limit per verification, seconds."""
    non_finite: Literal["error", "mask"] = "error"
    """A NaN or infinite reward in RL: `error` stops with the reward term and the sample named;
    `mask` leaves the sample out of the loss and of its group's mean and std, and counts it
    (`reward/non_finite`). docs/rewards.md, "Rewards entering training"."""

    def params_of(self, name: str) -> dict[str, Any]:
        """The params of the first term named `name` ({} if none), so checks outside RL score as RL does."""
        return next((dict(t.params) for t in self.terms if t.name == name), {})

    @property
    def answer_extraction(self) -> str:
        """How answers are extracted (the accuracy term's `extract`, default boxed): evaluation and the
        SFT/preference checks use it, so they agree with the reward."""
        return self.params_of("accuracy").get("extract", "boxed")


class OptimConfig(Section):
    """AdamW and its schedule; every training stage has its own copy."""

    lr: float = Field(1e-5, gt=0.0)
    """Learning rate (AdamW; TRL's learning_rate)."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Clip the gradient's global norm to this."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up of the learning rate over this many optimiser steps."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule after warm-up."""
    bf16_autocast: bool | Literal["auto"] = "auto"
    """bf16 autocast for forward/backward; `auto` turns it on where bf16 is native (GPU, AMX CPU).
    Weights and optimiser state stay fp32."""


class RLConfig(OptimConfig):
    """The RL stage's loop and batch sizes (docs/algorithms.md §1-9)."""

    lr: float = Field(2e-5, gt=0.0)
    """Learning rate (AdamW; TRL's learning_rate)."""
    steps: int = Field(20, ge=1)
    """Training steps: each samples `prompts_per_step` x `group_size` completions (TRL's max_steps)."""
    prompts_per_step: int = Field(8, ge=1)
    """Prompts per step (verl's train_batch_size)."""
    group_size: int = Field(8, ge=1)
    """G: completions sampled per prompt (TRL's num_generations, verl's rollout.n)."""
    mini_batch_size: int = Field(64, ge=1)
    """Completions per optimiser step."""
    micro_batch_size: int = Field(16, ge=1)
    """Completions per forward/backward pass (gradient accumulation within a mini-batch)."""
    micro_batch_tokens: int | None = Field(None, ge=1)
    """Token budget per forward/backward pass (verl's `use_dynamic_bsz` with `ppo_max_token_len_per_gpu`):
    a mini-batch's rows are ordered by completion length and cut into the fewest micro-batches of at
    most this many computed positions (distinct prompts x prompt width + rows x completion width,
    padding included), among those the ones computing the fewest positions: rows of similar
    length share a pass. A smaller budget: more passes, less padding.
    The update is the same (the loss is normalised over the mini-batch, docs/algorithms.md §4).
    None = `micro_batch_size` rows per pass."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each step's completions (TRL's num_iterations, verl's ppo_epochs)."""
    skip_zero_advantage: bool = True
    """Skip the forward/backward of rows that add exactly zero gradient (advantage 0 and no KL,
    entropy or value term in the loss); the update is unchanged, only faster."""
    levels: list[int] | None = None
    """Only problems of these levels for RL (its training and periodic evaluation); None = data.levels.
    E.g. SFT on levels 1-2 and RL on level 1, where the SFT model is right often enough to learn from."""
    eval_every: int = Field(10, ge=0)
    """Evaluate on the held-out set every N steps (0 = never); step 0 and the last step included."""
    eval_problems: int = Field(100, ge=1)
    """Held-out problems per periodic evaluation."""
    eval_samples: int = Field(4, ge=1)
    """Samples per problem in periodic evaluations (avg@n)."""
    eval_temperature: float = Field(0.6, ge=0.0)
    """Sampling temperature of periodic evaluations."""
    eval_top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling of periodic evaluations (like `eval.top_p` for the eval stage)."""
    save_every: int = Field(10, ge=0)
    """Save a resumable checkpoint `rl/checkpoint-<step>/` every N steps (0 = only after the last step)."""
    keep_checkpoints: int | None = Field(2, ge=1)
    """How many of this run's checkpoints to keep (the newest; None = all). Another run's
    checkpoints in the same folder are never deleted; `rl/final/` is kept besides these."""
    log_completions: int = Field(4, ge=0)
    """Completions per step, drawn at random from the step's batch, written with their prompt, reward
    (and each term) and advantage to `rl/completions.jsonl` and TensorBoard's text tab; 0 = off
    (TRL's `log_completions`)."""

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
    """Supervised fine-tuning on the worked solutions (the `solution` column)."""

    lr: float = Field(2e-4, gt=0.0)
    """Learning rate (AdamW; TRL's learning_rate)."""
    epochs: float = Field(1.0, gt=0.0)
    """Passes over the training examples (fractions allowed; TRL's num_train_epochs)."""
    batch_size: int = Field(8, ge=1)
    """Examples per optimiser step."""
    micro_batch_size: int = Field(8, ge=1)
    """Examples per forward/backward pass (gradient accumulation within a batch)."""
    max_length: int = Field(512, ge=16)
    """Prompt plus solution tokens; longer solutions are cut (examples whose prompt fills it are dropped)."""
    packing: bool = False
    """Pack several examples into one row (attention kept within each example)."""
    eval_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    """Share of the examples held out for the eval loss and the format check."""
    max_examples: int | None = Field(None, ge=1)
    """A seeded random subset of this many examples; None = all with a worked solution."""


class RewardModelConfig(OptimConfig):
    """The Bradley-Terry reward model and the preference pairs it learns from (docs/algorithms.md §10)."""

    lr: float = Field(1e-4, gt=0.0)
    """Learning rate (AdamW; TRL's learning_rate)."""
    epochs: float = Field(1.0, gt=0.0)
    """Passes over the training pairs (TRL's num_train_epochs)."""
    batch_size: int = Field(8, ge=1)
    """Pairs per optimiser step."""
    max_length: int = Field(512, ge=16)
    """Prompt plus response tokens; longer responses are cut."""
    pairs: str | None = None
    """A preference file with prompt/chosen/rejected columns; None = build pairs by sampling."""
    num_problems: int = Field(256, ge=1)
    """Sampled pairs: training problems to sample."""
    samples_per_problem: int = Field(4, ge=2)
    """Sampled pairs: completions per problem, judged by the accuracy reward."""
    pairs_per_problem: int = Field(4, ge=1)
    """Sampled pairs: at most this many (correct, wrong) combinations of one problem's samples."""
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of the problems whose pairs are held out for the pairwise accuracy."""


class DPOConfig(RewardModelConfig):
    """Direct preference optimisation on the same kind of pairs (docs/algorithms.md §10)."""

    lr: float = Field(5e-5, gt=0.0)
    """Learning rate (AdamW; TRL's learning_rate)."""
    beta: float = Field(0.1, gt=0.0)
    """DPO's beta: the strength of the implicit KL to the reference (TRL's beta)."""


class EvalConfig(Section):
    """AIME-style evaluation: avg@n, pass@k, maj@k (docs/algorithms.md §11)."""

    dataset: str = "datasets/test.jsonl"
    """A path, a hub dataset, or a preset name: rlvr-test, aime24, aime25, math500, gsm8k."""
    split: str = "test"
    """The split of a hub dataset."""
    levels: list[int] | None = None
    """Only problems of these difficulty levels (like `data.levels`); None = all."""
    problems: int | None = Field(None, ge=1)
    """A seeded random subset of this many problems; None = all."""
    n: int = Field(4, ge=1)
    """Samples per problem; n=1 decodes greedily, and temperature 0 decodes once (reported as n=1)."""
    k: list[int] = Field(default_factory=lambda: [1, 4])
    """The k of pass@k and maj@k (each at most n)."""
    temperature: float = Field(0.6, ge=0.0)
    """Sampling temperature."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    max_tokens: int = Field(256, ge=1)
    """Most new tokens per completion."""
    seed: int = 0
    """Seed of the problem subset and of sampling."""
    compare: list[str] = Field(default_factory=list)
    """Checkpoints (adapter folders) to evaluate side by side with the base model."""



class ClusterConfig(Section):
    """Where the work runs (docs/design.md, "Scaling out"). One rollout worker and one learner rank
    with no `address` is the single process, without Ray."""

    address: str | None = None
    """Ray cluster to join: `local` (start a private one), `auto` (the one `ray start` made on this
    machine) or `ray://host:port`; None: a private local Ray only when a worker count is above 1."""
    rollout_workers: int = Field(1, ge=1)
    """Rollout engine replicas (Ray actors), each generating whole groups."""
    learner_workers: int = Field(1, ge=1)
    """Data-parallel learner ranks (Ray actors joined by torch.distributed: gloo on CPU, NCCL on GPU)."""
    cpus_per_rollout_worker: float = Field(1.0, gt=0.0)
    """CPUs Ray reserves for each rollout worker (fractions share a core)."""
    gpus_per_rollout_worker: float = Field(0.0, ge=0.0)
    """GPUs Ray reserves for each rollout worker."""
    cpus_per_learner_worker: float = Field(1.0, gt=0.0)
    """CPUs Ray reserves for each learner rank."""
    gpus_per_learner_worker: float = Field(0.0, ge=0.0)
    """GPUs Ray reserves for each learner rank."""
    colocate: bool = False
    """One rollout worker and one learner rank share each GPU (equal counts required); the engine
    releases its memory during the update (vLLM sleep mode). False: separate pools."""
    collective_timeout_s: float = Field(60.0, gt=0.0)
    """A gradient all-reduce whose peer died fails after this many seconds (not gloo's 30 minutes)."""
    rollout_timeout_s: float = Field(600.0, gt=0.0)
    """A rollout worker that has not answered a generation in this many seconds is timed out."""

    @field_validator("address")
    @classmethod
    def _check_address(cls, address: str | None) -> str | None:
        if address is None or address in ("local", "auto") or address.startswith("ray://") \
                or address.rpartition(":")[2].isdigit():
            return address
        raise ValueError(f"{address!r} is not `local`, `auto`, `ray://host:port` or `host:port`")

    @property
    def uses_ray(self) -> bool:
        """Ray is started or joined: an address is given, or some worker count is above 1."""
        return self.address is not None or self.rollout_workers > 1 or self.learner_workers > 1

    @model_validator(mode="after")
    def _check_colocate(self) -> "ClusterConfig":
        if self.colocate and self.rollout_workers != self.learner_workers:
            raise ValueError(f"colocate needs rollout_workers == learner_workers "
                             f"(got {self.rollout_workers} and {self.learner_workers})")
        return self


class Config(Section):
    """Everything a stage reads: top-level keys and one section per concern."""

    output_dir: str = "runs/demo"
    """Each stage writes its own folder under this one (sft/, rl/, eval/, ...)."""
    seed: int = 0
    """Seed of data selection, sampling and initialisation."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the learner runs; `auto`: cuda when available."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The base model and the checkpoint a stage starts from."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """The LoRA adapter every training stage trains."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Training and held-out problems."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """Sampling completions and weight sync."""
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    """The RL algorithm (preset plus overrides)."""
    reward: RewardConfig = Field(default_factory=RewardConfig)
    """The verifiable reward."""
    rl: RLConfig = Field(default_factory=RLConfig)
    """The RL stage."""
    sft: SFTConfig = Field(default_factory=SFTConfig)
    """The SFT stage."""
    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig)
    """The reward-model stage."""
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    """The DPO stage."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """The eval stage."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Where the work runs: rollout workers and learner ranks (one of each: this process, no Ray)."""

    @model_validator(mode="after")
    def _check_algorithm(self) -> Config:
        if self.algorithm.group_advantage and self.rl.group_size < 2:
            raise ValueError(
                f"rl.group_size={self.rl.group_size}: advantage {self.algorithm.advantage!r} "
                "compares completions within a group and needs rl.group_size >= 2"
            )
        ranks, groups = self.cluster.learner_workers, self.rl.mini_batch_size / self.rl.group_size
        if ranks > 1 and not (groups.is_integer() and groups >= ranks):
            raise ValueError(
                f"cluster.learner_workers={ranks}: each rank computes whole groups of every mini-batch, so "
                f"rl.mini_batch_size={self.rl.mini_batch_size} must be a multiple of "
                f"rl.group_size={self.rl.group_size} holding at least {ranks} groups"
            )
        if self.rollout.temperature == 0 and self.rl.group_size > 1:
            raise ValueError(
                f"rollout.temperature=0 decodes greedily: the rl.group_size={self.rl.group_size} "
                "completions of a prompt would be identical (no learning signal); set "
                "rollout.temperature > 0"
            )
        return self


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of `model`; a union of sections (`algorithm.policy_loss`) gives each member's keys."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for sub in _sections_of(field.annotation):
            keys.extend(_valid_keys(sub, f"{prefix}{name}."))
    return list(dict.fromkeys(keys))


def _sections_of(annotation: Any) -> list[type[BaseModel]]:
    """The section classes a field holds: itself, or the members of a (discriminated) union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, UnionType, Annotated):
        return [sub for arg in get_args(annotation) for sub in _sections_of(arg)]
    return []


STAGE_SECTIONS = ("rl", "sft", "reward_model", "dpo", "eval")
"""Sections that belong to one stage; `{stage}` in FOREIGN_NAMES stands for one of them."""

_OWN_BATCH = {"rl": "rl.micro_batch_size", "sft": "sft.micro_batch_size",
              "reward_model": "reward_model.batch_size", "dpo": "dpo.batch_size"}
_SAMPLING = {"eval": "eval.{leaf}", "*": "rollout.{leaf}"}

FOREIGN_NAMES: dict[str, str | dict[str, str]] = {
    # TRL (GRPOConfig, SFTConfig, DPOConfig, RewardConfig, peft) and verl names -> ours. A dict maps
    # the stage's section (or "*": any other) to the key; `{stage}` is the stage's own section.
    "num_generations": "rl.group_size", "rollout.n": "rl.group_size", "n": {"eval": "eval.n", "*": "rl.group_size"},
    "beta": {"dpo": "dpo.beta", "*": "algorithm.kl_coef"},
    "kl_coef": "algorithm.kl_coef", "kl_loss_coef": "algorithm.kl_coef", "init_kl_coef": "algorithm.kl_coef",
    "use_kl_loss": "algorithm.kl_coef", "kl_loss_type": "algorithm.kl_estimator", "kl_penalty": "algorithm.kl_estimator",
    "use_kl_in_reward": "algorithm.kl_in_reward", "entropy_coeff": "algorithm.entropy_coef",
    "learning_rate": "{stage}.lr", "lr": "{stage}.lr",
    "max_completion_length": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "max_response_length": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "response_length": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "max_new_tokens": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "max_prompt_length": "data.max_prompt_tokens", "max_length": "{stage}.max_length",
    "max_seq_length": "{stage}.max_length",
    "epsilon": "algorithm.policy_loss.eps", "epsilon_low": "algorithm.policy_loss.eps_low",
    "epsilon_high": "algorithm.policy_loss.eps_high", "clip_ratio": "algorithm.policy_loss.eps",
    "cliprange": "algorithm.policy_loss.eps", "clip_ratio_low": "algorithm.policy_loss.eps_low",
    "clip_ratio_high": "algorithm.policy_loss.eps_high", "clip_ratio_c": "algorithm.policy_loss.dual_clip_c",
    "delta": "algorithm.policy_loss.dual_clip_c",
    # our own flat keys before the losses' typed settings (algorithm.eps_high -> algorithm.policy_loss.eps_high)
    **{f"algorithm.{key}": f"algorithm.policy_loss.{key}"
       for key in ("eps", "eps_low", "eps_high", "dual_clip_c", "tau_pos", "tau_neg")},
    # our own flat keys before the corrections' typed settings (algorithm.tis_cap -> algorithm.correction.cap)
    "algorithm.tis": "algorithm.correction", "algorithm.tis_cap": "algorithm.correction.cap",
    "algorithm.tis_lower": "algorithm.correction.lower", "algorithm.tis_upper": "algorithm.correction.upper",
    # TRL (vllm_importance_sampling_*), verl (rollout_correction.rollout_is/rs*, tis_imp_ratio_cap), ms-swift
    "vllm_importance_sampling_correction": "algorithm.correction",
    "vllm_importance_sampling_mode": "algorithm.correction",
    "vllm_importance_sampling_cap": "algorithm.correction.cap",
    "rollout_correction": "algorithm.correction", "rollout_is": "algorithm.correction",
    "rollout_rs": "algorithm.correction", "rollout_is_threshold": "algorithm.correction.cap",
    "rollout_rs_threshold": "algorithm.correction.upper",
    "rollout_rs_threshold_lower": "algorithm.correction.lower", "tis_imp_ratio_cap": "algorithm.correction.cap",
    "rollout_importance_sampling_mode": "algorithm.correction",
    "rollout_importance_sampling_threshold": "algorithm.correction.cap",
    "temperature": _SAMPLING, "top_p": _SAMPLING, "top_k": "rollout.top_k",
    "per_device_train_batch_size": _OWN_BATCH, "ppo_micro_batch_size": "rl.micro_batch_size",
    "ppo_micro_batch_size_per_gpu": "rl.micro_batch_size", "micro_batch_size": _OWN_BATCH,
    "gradient_accumulation_steps": {"rl": "rl.mini_batch_size", "*": "{stage}.batch_size"},
    "ppo_mini_batch_size": "rl.mini_batch_size",
    "use_dynamic_bsz": "rl.micro_batch_tokens", "ppo_max_token_len_per_gpu": "rl.micro_batch_tokens",
    "train_batch_size": {"rl": "rl.prompts_per_step", "*": "{stage}.batch_size"},
    "generation_batch_size": "rl.prompts_per_step",
    "batch_size": {"rl": "rl.prompts_per_step", "*": "{stage}.batch_size"},
    "num_train_epochs": {"rl": "rl.steps", "*": "{stage}.epochs"},
    "total_epochs": {"rl": "rl.steps", "*": "{stage}.epochs"},
    "epochs": {"rl": "rl.steps", "*": "{stage}.epochs"},
    "max_steps": "rl.steps", "total_training_steps": "rl.steps",
    "num_iterations": "rl.ppo_epochs", "ppo_epochs": "rl.ppo_epochs",
    "warmup_ratio": "{stage}.warmup_steps", "lr_warmup_steps": "{stage}.warmup_steps",
    "lr_scheduler_type": "{stage}.lr_schedule", "bf16": "{stage}.bf16_autocast",
    "grad_clip": "{stage}.max_grad_norm",
    "loss_type": "algorithm.loss_agg", "loss_agg_mode": "algorithm.loss_agg",
    "adv_estimator": "algorithm.advantage", "scale_rewards": "algorithm.advantage",
    "norm_adv_by_std_in_grpo": "algorithm.advantage",
    "mask_truncated_completions": "algorithm.overlong_filter", "overlong_filtering": "algorithm.overlong_filter",
    "reward_funcs": "reward.terms", "reward_weights": "reward.terms",
    "model_name_or_path": "model.name", "model_path": "model.name", "torch_dtype": "model.dtype",
    "lora_r": "lora.rank", "r": "lora.rank", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules", "use_peft": "lora.enabled",
    "use_vllm": "rollout.engine", "vllm_mode": "rollout.engine",
    "vllm_gpu_memory_utilization": "rollout.gpu_memory_utilization",
    "vllm_max_model_length": "rollout.max_model_len",
    "save_steps": "rl.save_every", "save_freq": "rl.save_every", "eval_steps": "rl.eval_every",
    "test_freq": "rl.eval_every", "seed": {"eval": "eval.seed", "*": "seed"},
    "dataset_name": {"eval": "eval.dataset", "*": "data.train"}, "train_files": "data.train",
    "val_files": "data.test", "eval_dataset": "data.test", "dataset_train_split": "data.split",
}


def _hints(key: str, valid: list[str], section: str | None) -> list[str]:
    """Valid keys a user probably meant by the unknown `key`, for the stage whose own section is `section`.

    In order: a TRL/verl name (FOREIGN_NAMES), the same name under another section, a close spelling.
    The section the key was written under (`dpo.beta`) wins over the stage's.
    """
    parts = key.split(".")
    leaf, where = parts[-1], parts[0] if len(parts) > 1 and parts[0] in STAGE_SECTIONS else section
    entry = FOREIGN_NAMES.get(".".join(parts[-2:])) or FOREIGN_NAMES.get(leaf)
    if entry is not None:
        options = [entry] if isinstance(entry, str) else (
            [entry.get(where, entry.get("*", ""))] if where else list(entry.values()))
        found = []
        for option in options:
            stages = [where] if where and "{stage}" in option else STAGE_SECTIONS
            found += [option.format(stage=s, leaf=leaf) for s in stages]
        found = [k for k in dict.fromkeys(found) if k in valid]
        if found:
            return found
    same_leaf = [k for k in valid if k.endswith("." + leaf) or k == leaf]
    if same_leaf:
        own = [k for k in same_leaf if k.split(".")[0] == where]
        return own or same_leaf
    return difflib.get_close_matches(key, valid, n=1, cutoff=0.6)


def _explain(error: ValidationError, section: str | None = None) -> str:
    lines = []
    valid = _valid_keys(Config)
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        if item["type"] == "extra_forbidden":
            close = _hints(key, valid, section)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
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


def _typed_as_mapping(data: dict[str, Any]) -> dict[str, Any]:
    """`algorithm.policy_loss: dapo` as `{type: dapo}` (likewise `correction`), so
    `algorithm.policy_loss.eps_high=0.3` given elsewhere merges into it instead of replacing it."""
    algorithm = data.get("algorithm")
    if not isinstance(algorithm, dict):
        return data
    named = {key: {"type": algorithm[key]} for key in TYPED_KEYS if isinstance(algorithm.get(key), str)}
    return {**data, "algorithm": {**algorithm, **named}} if named else data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                section: str | None = None) -> Config:
    """Load a YAML recipe (optional), apply `key=value` overrides, validate everything.

    `section` is the running stage's own section (`rl`, `dpo`, ...): an unknown key's hint
    points there (`learning_rate` -> `dpo.lr` under `rlvr dpo`). Raises ConfigError.
    """
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
    data = _merge(_typed_as_mapping(data), _typed_as_mapping(parse_overrides(overrides or [])))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        source = f"{path}: " if path is not None else ""
        raise ConfigError(source + _explain(exc, section)) from None


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))


def commented_yaml(config: BaseModel, keys: Sequence[str] | None = None) -> str:
    """`config` as YAML that `load_config` reads back, each key under a comment (its docstring).

    `keys` selects and orders the top-level keys (default: all), e.g. the sections a stage reads.
    """
    lines: list[str] = []
    _emit_yaml(config, list(keys) if keys is not None else list(type(config).model_fields), "", lines)
    return "\n".join(lines) + "\n"


def _emit_yaml(model: BaseModel, names: list[str], indent: str, lines: list[str]) -> None:
    fields, plain = type(model).model_fields, model.model_dump()
    for name in names:
        description = fields[name].description or ""
        lines += [f"{indent}# {line.strip()}".rstrip() for line in description.splitlines()]
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            _emit_yaml(value, list(type(value).model_fields), indent + "  ", lines)
        else:
            lines.append(f"{indent}{name}: {yaml_value(plain[name])}")


def yaml_value(value: Any) -> str:
    """A plain value as one line of YAML flow style (`[1, 2]`, `null`, `runs/demo`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...")
