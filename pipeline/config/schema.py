"""`Config`: the root of the schema, one field per section, and the checks that span sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.algorithm import AlgorithmConfig
from pipeline.config.base import Section
from pipeline.config.sections import (ClusterConfig, DataConfig, LoraConfig, ModelConfig, RewardConfig,
                                      RolloutConfig)
from pipeline.config.stages import DPOConfig, EvalConfig, RewardModelConfig, RLConfig, SFTConfig


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
        if self.rl.max_staleness and self.cluster.colocate:
            raise ValueError(
                f"rl.max_staleness={self.rl.max_staleness} overlaps generation with the update, but "
                "cluster.colocate=true puts the engine to sleep during the update; use separate devices "
                "(cluster.colocate=false) or rl.max_staleness=0"
            )
        self._check_lengths()
        self.check_lora_rank(self.rollout.sync)
        return self

    def _check_lengths(self) -> None:
        """A prompt (at most data.max_prompt_tokens) and its completion (rollout.max_tokens in RL,
        eval.max_tokens in eval, both served by the rollout engine) must fit rollout.max_model_len."""
        prompt, context = self.data.max_prompt_tokens, self.rollout.max_model_len
        for key, tokens in (("rollout.max_tokens", self.rollout.max_tokens), ("eval.max_tokens", self.eval.max_tokens)):
            if prompt + tokens > context:
                raise ValueError(
                    f"data.max_prompt_tokens={prompt} + {key}={tokens} = {prompt + tokens} exceeds "
                    f"rollout.max_model_len={context} (the engine's context: prompt plus completion); raise "
                    f"rollout.max_model_len or lower {key} or data.max_prompt_tokens")

    def check_lora_rank(self, sync: str) -> None:
        """With `sync` (rollout.sync, resolved: `adapter` or `merged`) pushing LoRA adapters to vLLM, the
        engine must accept lora.rank; ValueError naming both keys otherwise (`auto` is checked where it
        resolves, stages/preflight/model.py)."""
        if sync == "adapter" and self.lora.enabled and self.lora.rank > self.rollout.max_lora_rank:
            raise ValueError(
                f"lora.rank={self.lora.rank} exceeds rollout.max_lora_rank={self.rollout.max_lora_rank}, the "
                f"largest adapter rank vLLM accepts with adapter sync; raise rollout.max_lora_rank to at least "
                f"{self.lora.rank} (or use rollout.sync=merged)")

    @property
    def uses_pool(self) -> bool:
        """Rollouts go through Ray workers (docs/design.md, "Scaling out"): more than one, Ray asked
        for by address (its overhead is measured at one worker with `cluster.address=local`), or
        asynchronous RL (`rl.max_staleness > 0`: one worker actor beside the learner at least)."""
        cluster = self.cluster
        return cluster.rollout_workers > 1 or cluster.address is not None or self.rl.max_staleness > 0

    @property
    def uses_ray(self) -> bool:
        """Ray is started or joined: for the rollout pool or the data-parallel learner ranks."""
        return self.uses_pool or self.cluster.uses_ray


