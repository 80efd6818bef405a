"""Does the engine serve the learner's weights? Compare both sides' log-probs of one completion."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SYNC_TOLERANCE = 0.05
"""Mean absolute log-prob difference (nats) allowed between a bf16 engine and an fp32 learner."""


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


@torch.no_grad()
def learner_logprobs(policy, pad_id: int, prompt_ids: list[int], completion_ids: list[int],
                     temperature: float = 1.0) -> list[float]:
    """The learner's log-probs of `completion_ids` after `prompt_ids`: its own forward pass
    (`pipeline.core.forward.completion_forward`), in the module's dtype with autocast off."""
    from pipeline.core.forward import collate, completion_forward

    device = next(policy.parameters()).device
    batch = collate([list(prompt_ids)], [list(completion_ids)], pad_id).to(device)
    training = policy.training
    policy.eval()
    try:
        with torch.autocast(device.type, enabled=False):
            out = completion_forward(policy, batch, temperature or 1.0)
    finally:
        policy.train(training)
    return out.logp[0, : len(completion_ids)].tolist()


def check_sync(engine, policy, tokenizer, prompt_ids: list[int], completion_ids: list[int], *,
               temperature: float = 1.0) -> SyncReport:
    """Compare the engine's and the policy's log-probs of a fixed completion (fp32 learner).
    A pool of rollout workers (`worker_logprobs`) is checked on every worker; the report is
    the worst one's."""
    if not completion_ids:
        raise ValueError("check_sync needs a non-empty completion")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    learner = learner_logprobs(policy, pad_id, prompt_ids, completion_ids, temperature)
    if hasattr(engine, "worker_logprobs"):
        served = engine.worker_logprobs(prompt_ids, completion_ids, temperature)
    else:
        served = [engine.prompt_logprobs(prompt_ids, completion_ids, temperature)]
    return max((SyncReport(learner, each) for each in served), key=lambda report: report.mean_abs_diff)
