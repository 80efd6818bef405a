"""The TRL side of benchmarks/vs_trl.py: TRL's GRPOTrainer set to the same work and objective as
rlvr's RL config (vs_trl.py's docstring lists what is shared and what differs).

    result = train_trl(config, model_path, tokenizer, problems, adapter, out, use_vllm=False)

Imported by vs_trl.py after its offline switches (this module imports transformers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

if TYPE_CHECKING:
    from trl import GRPOConfig

    from pipeline.config import Config
    from pipeline.data.problems import Problem

TRL_LOSS_TYPES = {"seq-mean-token-mean": "grpo", "token-mean": "dapo", "seq-mean-token-sum-norm": "dr_grpo"}
"""rlvr's loss aggregation -> TRL's `loss_type` with the same normalisation."""


def trl_clip(loss: Any) -> dict[str, float]:
    """TRL's clip range for rlvr's policy loss settings (docs/algorithms.md §3): a `ppo_clip` loss's
    symmetric `eps` is TRL's `epsilon`; DAPO's `eps_low`/`eps_high` are `epsilon`/`epsilon_high`.

    Raises ValueError for a loss or setting TRL's GRPO objective has no counterpart of (TRL's
    `delta` caps every ratio, not the loss of A < 0 tokens as `dual_clip_c` does).
    """
    if getattr(loss, "dual_clip_c", None) is not None:
        raise ValueError("TRL's GRPOTrainer has no dual clip: unset algorithm.policy_loss.dual_clip_c")
    if loss.type == "ppo_clip":
        return {"epsilon": loss.eps}
    if loss.type == "dapo":
        return {"epsilon": loss.eps_low, "epsilon_high": loss.eps_high}
    raise ValueError(f"the comparison with TRL supports the ppo_clip and dapo policy losses, not {loss.type!r}")


class StepLog(TrainerCallback):
    """Wall time of each optimiser step (generation included) and the trainer's per-step logs."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.logs: list[dict[str, float]] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.seconds.append(time.perf_counter() - self._start)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if logs and "reward" in logs:  # a step's log, not the end-of-training summary
            self.logs.append(dict(logs))


def trl_arguments(config: Config, out: Path, use_vllm: bool) -> GRPOConfig:
    """GRPOConfig for the same work and objective as rlvr's `config` (see the module docstring)."""
    from trl import GRPOConfig

    from pipeline.core.optim import uses_bf16_autocast

    rl, algo, rollout = config.rl, config.algorithm, config.rollout
    bf16 = uses_bf16_autocast(torch.device("cpu"), rl.bf16_autocast)  # rlvr's learner autocasts alike
    return GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=bf16, gradient_checkpointing=False, seed=config.seed,
        learning_rate=rl.lr, lr_scheduler_type="constant", weight_decay=rl.weight_decay,
        max_grad_norm=rl.max_grad_norm, max_steps=rl.steps, per_device_train_batch_size=rl.micro_batch_size,
        gradient_accumulation_steps=rl.mini_batch_size // rl.micro_batch_size, shuffle_dataset=False,
        num_generations=rl.group_size, max_completion_length=rollout.max_tokens,
        temperature=rollout.temperature, top_p=rollout.top_p,
        beta=algo.kl_coef, **trl_clip(algo.policy_loss), scale_rewards="group",
        loss_type=TRL_LOSS_TYPES[algo.loss_agg],
        use_vllm=use_vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=rollout.gpu_memory_utilization,
        vllm_max_model_length=rollout.max_model_len,
        logging_steps=1, report_to="none", save_strategy="no",
    )


def train_trl(config: Config, model_path: str, tokenizer: Any, problems: list[Problem], adapter: Path, out: Path,
              use_vllm: bool) -> dict[str, Any]:
    """Keep training the SFT `adapter` with TRL's GRPOTrainer on `problems` (in order, prompts rendered
    with rlvr's system prompt and chat template), saving it to `out/adapter`. Returns the sampler
    ("mode"), seconds per step, TRL's per-step `time` logs ("phases"), mean rewards and the adapter."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    import rewards
    from pipeline.core.tokens import render_prompt

    rows = [{"prompt": render_prompt(tokenizer, p.problem, config.data.system_prompt), "answer": p.answer}
            for p in problems]
    # the SFT adapter, trainable: TRL keeps training it (no peft_config, so no second adapter)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32")
    policy = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    reward = rewards.get("accuracy", timeout=config.reward.timeout, workers=config.reward.workers)
    steps = StepLog()
    try:
        trainer = GRPOTrainer(model=policy, reward_funcs=reward, train_dataset=Dataset.from_list(rows),
                              args=trl_arguments(config, out, use_vllm),
                              processing_class=AutoTokenizer.from_pretrained(model_path), callbacks=[steps])
        trainer.train()
        trainer.save_model(str(out / "adapter"))
    finally:
        reward.close()
    return {
        "mode": "vLLM colocate" if use_vllm else "HF generate",
        "step_seconds": steps.seconds,
        "phases": {key: [log[key] for log in steps.logs] for key in steps.logs[0] if "time" in key},
        "rewards": [log["reward"] for log in steps.logs],
        "adapter": str(out / "adapter"),
    }
