"""Does the engine serve the learner's weights? Compare both sides' log-probs of one completion.

    check = SyncCheck.build(tokenizer, prompt_ids, every=config.rollout.sync_check_every)
    engine.update_weights(model)
    record.update(check(engine, model, step))      # SyncError when the engine serves other weights

After a weight sync the engine's log-probs of a fixed completion at T = 1 must match the
learner's, scored with the learner's weights rounded as the engine holds them (`served_policy`),
within a tolerance set by the engine's dtype (`tolerance_for`); a sync that silently did nothing
(a stale adapter, a failed in-place reload) would otherwise train on samples from old weights with
importance ratios that hide it (docs/design.md, "Rollout engines and weight sync").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core.forward import collate, completion_forward
from pipeline.core.optim import eval_mode
from pipeline.rollout.weights import is_lora

SYNC_PROBE = " Let me add the numbers step by step: 2 + 2 = 4. The answer is \\boxed{4}."
"""The fixed completion `SyncCheck` scores (any text works: it is scored, not sampled)."""
SYNC_TOLERANCE = 0.05
"""Mean absolute log-prob difference (nats) allowed to a float32 engine (measured: 0.0000)."""
SYNC_TOLERANCE_16BIT = 0.15
"""The same for a bf16 or fp16 engine, whose kernels compute in 16 bits. Measured on SmolLM2-135M
(bf16 vLLM, merged sync, against the rounded reference): 0.025-0.033 at the start of the demo's RL,
0.051 at its step 19 as the policy sharpened, and 0.10-0.12 without rounding the reference; a sync
that did nothing (the engine serving the base model under the SFT adapter): about 1.5."""


def tolerance_for(dtype: torch.dtype | None) -> float:
    """The sync check's tolerance for an engine holding its weights in `dtype` (None: unknown)."""
    return SYNC_TOLERANCE_16BIT if dtype in (torch.bfloat16, torch.float16) else SYNC_TOLERANCE


@dataclass
class SyncReport:
    learner: list[float]
    engine: list[float]
    tolerance: float = SYNC_TOLERANCE

    @property
    def mean_abs_diff(self) -> float:
        return sum(abs(a - b) for a, b in zip(self.learner, self.engine)) / max(1, len(self.learner))

    @property
    def max_abs_diff(self) -> float:
        return max((abs(a - b) for a, b in zip(self.learner, self.engine)), default=0.0)

    @property
    def passed(self) -> bool:
        return self.mean_abs_diff < self.tolerance

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "MISMATCH"
        return (f"sync check {verdict}: mean |dlogp| {self.mean_abs_diff:.4f} "
                f"(max {self.max_abs_diff:.4f}) over {len(self.learner)} tokens")


def learner_logprobs(policy, pad_id: int, prompt_ids: list[int], completion_ids: list[int],
                     temperature: float = 1.0) -> list[float]:
    """The learner's log-probs of `completion_ids` after `prompt_ids`: its own forward pass
    (`pipeline.core.forward.completion_forward`), in the module's dtype with autocast off."""
    device = next(policy.parameters()).device
    batch = collate([list(prompt_ids)], [list(completion_ids)], pad_id).to(device)
    with eval_mode(policy), torch.autocast(device.type, enabled=False):
        out = completion_forward(policy, batch, temperature or 1.0)
    return out.logp[0, : len(completion_ids)].tolist()


@torch.no_grad()
def served_policy(policy, sync: str | None, dtype: torch.dtype | None):
    """The policy as an engine holding its weights in `dtype` serves it: `policy` itself when that is
    its own dtype (or unknown); else a copy rounded to `dtype`, merged first (`W + s B A`, as
    `pipeline.rollout.weights.merged_weights` pushes it) under `sync="merged"`, base and adapter
    rounded apart under `sync="adapter"`. Costs one copy of the weights in `dtype` while it lives.
    Rounding alone moved SmolLM2-135M's probe by 0.10-0.12 nats in bf16, twice `SYNC_TOLERANCE`."""
    if dtype is None or dtype == next(policy.parameters()).dtype:
        return policy
    served = copy.deepcopy(policy)
    if sync == "merged" and is_lora(served):
        served = served.merge_and_unload()
    return served.to(dtype)


def check_sync(engine, policy, tokenizer, prompt_ids: list[int], completion_ids: list[int], *,
               temperature: float = 1.0) -> SyncReport:
    """Compare the engine's log-probs of a fixed completion with the policy's, the policy's weights
    rounded as the engine holds them (`served_policy`, from the engine's `dtype` and `sync`), within
    `tolerance_for` the engine's dtype. A pool
    of rollout workers (`worker_logprobs`) is checked on every worker; the report is the worst one's."""
    if not completion_ids:
        raise ValueError("check_sync needs a non-empty completion")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dtype = getattr(engine, "dtype", None)
    reference = served_policy(policy, getattr(engine, "sync", None), dtype)
    learner = learner_logprobs(reference, pad_id, prompt_ids, completion_ids, temperature)
    del reference
    if hasattr(engine, "worker_logprobs"):
        served = engine.worker_logprobs(prompt_ids, completion_ids, temperature)
    else:
        served = [engine.prompt_logprobs(prompt_ids, completion_ids, temperature)]
    return max((SyncReport(learner, each, tolerance_for(dtype)) for each in served),
               key=lambda report: report.mean_abs_diff)


class SyncError(RuntimeError):
    """The engine's log-probs disagree with the learner's after a weight sync."""


@dataclass(frozen=True)
class SyncCheck:
    """`rollout.sync_check_every`: every `every` weight syncs (0: never), `check_sync` on a fixed
    (prompt, completion) at T = 1; a mismatch stops the run with `SyncError`."""

    prompt_ids: list[int]
    completion_ids: list[int]
    every: int

    @classmethod
    def build(cls, tokenizer: Any, prompt_ids: list[int], every: int) -> SyncCheck:
        """The probe: `prompt_ids` (e.g. the first training prompt) followed by `SYNC_PROBE`."""
        completion = list(tokenizer(SYNC_PROBE, add_special_tokens=False)["input_ids"])
        return cls(list(prompt_ids), completion, every)

    def due(self, syncs: int) -> bool:
        """Whether the check runs after the `syncs`-th weight sync (counting from 1)."""
        return self.every > 0 and syncs % self.every == 0

    def __call__(self, engine: Any, policy: Any, tokenizer: Any, step: int) -> dict[str, float]:
        """Run the check; the `sync/logp_diff_mean` and `sync/logp_diff_max` metrics (nats), or SyncError."""
        report = check_sync(engine, policy, tokenizer, self.prompt_ids, self.completion_ids, temperature=1.0)
        if not report.passed:
            raise SyncError(f"step {step}: the rollout engine does not serve the learner's weights after the "
                            f"weight sync ({report}; tolerance {report.tolerance} nats, rollout.sync "
                            f"= {getattr(engine, 'sync', 'n/a')}); set rollout.sync_check_every=0 to train anyway")
        return {"sync/logp_diff_mean": report.mean_abs_diff, "sync/logp_diff_max": report.max_abs_diff}
