"""Each training and evaluation stage's own section: its optimiser, batch sizes and loop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section


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
    """Token budget per forward/backward pass (verl's `use_dynamic_bsz` with `ppo_max_token_len_per_gpu`).
    Packed (`pack_sequences`): one pass when all fits, else the rows, longest completion first,
    fill each pass in turn (`token_budget_split`). Padded: a mini-batch's rows are ordered by
    completion length and cut into micro-batches of at most this many computed positions
    (distinct prompts x prompt width + rows x completion width, padding included) that cost the
    least: computed positions plus `pass_overhead_tokens` per pass. Rows of similar length share
    a pass. The update is the same (the loss is normalised over the mini-batch, docs/algorithms.md §4).
    None = `micro_batch_size` rows per pass."""
    pass_overhead_tokens: int = Field(512, ge=0)
    """What one more forward/backward pass costs, in computed positions, for the padded token-budget
    split (`micro_batch_tokens`): it weighs a pass against the padding a wider pass computes.
    `benchmarks/roofline.py` measures it (`pass overhead`; it depends on the machine): for
    SmolLM2-135M on 2 cores, 300-450 with bf16 through AMX (a pass ~0.8 s, a position 2-2.5 ms)
    and 100-180 in float32 on AVX-512 (0.3-0.4 s, 2.4-3.2 ms).
    0: the fewest positions; a large value: the fewest passes (verl's dynamic batch size)."""
    pack_sequences: bool = False
    """Pack each pass's completions (pipeline/core/packing.py, docs/algorithms.md §14): they lie end
    to end in rows (of a width between the longest completion and twice it, whichever computes
    the fewest positions), whatever their group, each row continuing the prompts of the
    completions it holds (run once, as padded), with an attention mask that keeps completions
    apart. Fewer rows, the same log-probs up to rounding. False: every completion its own row,
    right-padded to the longest. Needs the model's `sdpa` attention (a boolean 4D mask); the mask
    is dense, rows x width x (prompts per row x prompt width + width): sized for CPU batches."""
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
    max_staleness: int = Field(0, ge=0)
    """Asynchronous RL (docs/design.md, "Asynchronous RL"): how many policy versions a trained group may
    lag the learner. 0: today's synchronous step (generate with the current weights, then learn).
    k > 0: up to 1 + k rollout batches are in flight on Ray rollout workers (one worker actor beside
    the learner at `cluster.rollout_workers: 1`) while the learner updates, so generation of step s+1
    overlaps the update of step s (verl's one-step-off-policy at 1); a group generated by version u
    is trained at version v <= u + k (older ones are dropped and counted), with the behaviour
    policy's `logp_old` (docs/algorithms.md §9)."""
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


