"""Terms the learner adds to the policy loss: KL to the reference (docs/algorithms.md §5) and the
entropy bonus (§6). Each returns its aggregated value (with gradient) and its statistic; the
learner weighs them: `loss = pg_loss + kl_coef * kl - entropy_coef * entropy`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.algorithms.losses import aggregate, kl_estimate, masked_mean


def kl_penalty(logp: Tensor, logp_ref: Tensor, mask: Tensor, estimator: str, agg: str,
               **normalisers: int | None) -> tuple[Tensor, dict[str, float]]:
    """§5 KL(pi_theta || pi_ref) per token by `estimator` (k1, k2, k3), aggregated like the policy
    loss (§4). `logp`, `logp_ref`, `mask`: [B, T]. Stat `kl/mean`: the masked token mean."""
    kl = kl_estimate(logp, logp_ref.detach(), estimator, mask)
    return aggregate(kl, mask, agg, **normalisers), {"kl/mean": masked_mean(kl.detach(), mask).item()}


def entropy_bonus(entropy: Tensor, mask: Tensor, agg: str,
                  **normalisers: int | None) -> tuple[Tensor, dict[str, float]]:
    """§6 the policy's token entropy [B, T] aggregated like the policy loss (§4); stat
    `entropy/mean`: the masked token mean."""
    entropy = torch.where(mask.bool(), entropy, 0.0)
    return aggregate(entropy, mask, agg, **normalisers), {"entropy/mean": masked_mean(entropy.detach(), mask).item()}
