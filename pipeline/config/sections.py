"""The sections every stage shares: model, LoRA, data, rollout, reward and cluster."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math solver. Think step by step, briefly, then give the final "
    "answer as \\boxed{answer}."
)


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
    preset: Literal["auto", "rlvr", "gsm8k", "math", "aime", "trl"] = "auto"
    """Column mapping preset (pipeline/data/records.py); `auto` picks one from the columns present
    (`trl`: TRL's and open-r1's `prompt` + `solution`)."""
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
    """One rollout worker and one learner rank share each GPU: one Ray bundle per GPU holds rollout
    worker i and learner rank i (equal counts; `gpus_per_rollout_worker + gpus_per_learner_worker`
    at most 1, both set, e.g. 0.5 each; without GPUs both 0 and the pair shares its bundle's CPUs).
    The engine sleeps through each update (vLLM sleep mode) and wakes before the next generation.
    At one of each without an address: the single process, its engine sleeping the same way.
    False: separate pools."""
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
        """docs/design.md, "Scaling out": a colocated pair shares one bundle, one GPU or none."""
        if not self.colocate:
            return self
        if self.rollout_workers != self.learner_workers:
            raise ValueError(f"colocate needs rollout_workers == learner_workers, one pair per GPU "
                             f"(got {self.rollout_workers} and {self.learner_workers})")
        gpus = (self.gpus_per_rollout_worker, self.gpus_per_learner_worker)
        if (gpus[0] > 0) != (gpus[1] > 0):
            raise ValueError(f"colocate shares each GPU between a rollout worker and a learner rank: set both "
                             f"gpus_per_rollout_worker and gpus_per_learner_worker (e.g. 0.5 each) or neither "
                             f"(got {gpus[0]:g} and {gpus[1]:g})")
        if sum(gpus) > 1:
            raise ValueError(f"colocate puts a rollout worker and a learner rank on one GPU: "
                             f"gpus_per_rollout_worker + gpus_per_learner_worker must be at most 1 "
                             f"(got {gpus[0]:g} + {gpus[1]:g})")
        return self
