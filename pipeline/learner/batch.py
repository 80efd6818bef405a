"""What one RL step hands from stage to stage (docs/design.md, "One RL step"). Each is built
once and never changed: the rollout batch and the old policy's scores (the advantages:
`pipeline.algorithms.advantages.Advantages`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core.forward import SequenceBatch, collate


@dataclass(frozen=True)
class RolloutBatch:
    """B sampled completions (completion width T), in whole groups of `group_size`, group after group."""

    seqs: SequenceBatch
    loss_mask: Tensor
    """[B, T] bool: completion tokens that count (all False on filtered rows)."""
    logp_engine: Tensor
    """[B, T] the engine's log-probs of its own samples (behaviour policy)."""
    rewards: Tensor
    """[B] float64 sequence rewards (NaN or inf where `valid` is False)."""
    valid: Tensor | None = None
    """[B] bool: rows whose reward is finite (None: all); a masked row counts for nothing in the loss."""
    group_size: int = 1
    versions: Tensor | None = None
    """[B] long: the policy version that sampled each row (None: `policy_version`)."""
    policy_version: int = 0
    """The learner's version when it trains on this batch (docs/design.md, "Asynchronous RL")."""

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def stale(self) -> Tensor:
        """[B] bool: rows sampled by an older policy than `policy_version` (their logp_old is the
        behaviour policy's, docs/algorithms.md §9)."""
        if self.versions is None:
            return torch.zeros(len(self), dtype=torch.bool)
        return self.versions < self.policy_version


@dataclass(frozen=True)
class PolicyScores:
    """The learner's view of a batch before the update (`Learner.score`), all [B, T] or None."""

    logp_old: Tensor | None
    """pi_old log-probs; None when the update is on-policy (the first forward's detached logp)."""
    logp_ref: Tensor | None
    """Reference policy log-probs (§5), when a KL term is used."""
    values: Tensor | None
    """V_old from the critic (PPO), else None."""
    logp_old_source: str = "learner"
    """Where the stale rows' logp_old came from (docs/algorithms.md §9): `learner` (no stale row:
    the current policy), `learner_adapter` (the learner under the adapter that sampled them) or
    `engine` (the engine's log-probs, without LoRA)."""


def build_batch(prompts: list[list[int]], completions: list[list[int]], logprobs: list[list[float]],
                rewards: list[float], valid: list[bool], truncated: list[bool], group_size: int, pad_id: int,
                overlong_filter: bool, versions: list[int] | None = None, policy_version: int = 0) -> RolloutBatch:
    """Collate B (prompt, completion) rows. Rows whose reward is masked (`valid` False,
    docs/rewards.md "Rewards entering training") and, with `overlong_filter` (DAPO, §7),
    truncated rows count for nothing in the loss (their `loss_mask` row is all False).
    `versions`: the policy version that sampled each row, trained at `policy_version`."""
    seqs = collate(prompts, completions, pad_id)
    T = seqs.completion_mask.shape[1]
    logp_engine = torch.zeros(len(completions), T)
    for i, row in enumerate(logprobs):
        logp_engine[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    mask = seqs.completion_mask.clone()
    if overlong_filter:
        mask[torch.tensor(truncated, dtype=torch.bool)] = False
    keep = torch.tensor(valid, dtype=torch.bool)
    mask[~keep] = False
    return RolloutBatch(seqs, mask, logp_engine, torch.tensor(rewards, dtype=torch.float64), keep, group_size,
                        None if versions is None else torch.tensor(versions, dtype=torch.long), policy_version)
