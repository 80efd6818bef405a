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

    def __len__(self) -> int:
        return len(self.seqs)


@dataclass(frozen=True)
class PolicyScores:
    """The learner's view of a batch before the update (`Learner.score`), all [B, T] or None."""

    logp_old: Tensor | None
    """pi_old log-probs; None when the update is on-policy (the first forward's detached logp)."""
    logp_ref: Tensor | None
    """Reference policy log-probs (§5), when a KL term is used."""
    values: Tensor | None
    """V_old from the critic (PPO), else None."""


def build_batch(prompts: list[list[int]], completions: list[list[int]], logprobs: list[list[float]],
                rewards: list[float], valid: list[bool], truncated: list[bool], group_size: int, pad_id: int,
                overlong_filter: bool) -> RolloutBatch:
    """Collate B (prompt, completion) rows. Rows whose reward is masked (`valid` False,
    docs/rewards.md "Rewards entering training") and, with `overlong_filter` (DAPO, §7),
    truncated rows count for nothing in the loss (their `loss_mask` row is all False)."""
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
    return RolloutBatch(seqs, mask, logp_engine, torch.tensor(rewards, dtype=torch.float64), keep, group_size)
