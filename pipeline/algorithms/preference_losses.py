"""Preference losses, docs/algorithms.md §10: Bradley-Terry for the reward model, DPO for the policy.

Inputs are per pair [B]: rewards `r(x, y)` (Bradley-Terry) or sequence log-probs summed over the
response tokens (DPO); outputs are per-pair losses [B], to be summed or averaged by the caller.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Per-pair §10 loss `-log sigmoid(r_w - r_l)` [B] (computed stably with logsigmoid)."""
    return -F.logsigmoid(r_chosen - r_rejected)


def dpo_loss(logp_chosen: Tensor, logp_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float) -> tuple[Tensor, Tensor]:
    """Per-pair §10 DPO loss [B] and `Delta` [B]."""
    delta = (logp_chosen - logp_rejected) - (ref_chosen - ref_rejected)
    return -F.logsigmoid(beta * delta), delta
