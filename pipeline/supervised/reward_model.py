"""Training the Bradley-Terry reward model (docs/algorithms.md §10): the loss over preference pairs and
the held-out margins. The architecture, saving and scoring: `pipeline.core.reward_model`.

Training minimises `-log sigmoid(r(x, y_w) - r(x, y_l))` over (chosen `y_w`, rejected `y_l`) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.algorithms.preference_losses import bradley_terry_loss
from pipeline.core.optim import autocast, eval_mode
from pipeline.core.reward_model import RewardModel
from pipeline.data.preference import EncodedPair, pair_batch
from pipeline.supervised.fit import UnitLoss, chunks


def _chosen_rejected(rm: RewardModel, pairs: Sequence[EncodedPair], pad_id: int,
                     device: torch.device) -> tuple[Tensor, Tensor]:
    """Rewards of the chosen and of the rejected responses [B] each."""
    rewards = rm(pair_batch(pairs, pad_id).to(device))
    return rewards[: len(pairs)], rewards[len(pairs):]


def reward_loss(rm: RewardModel, pad_id: int, device: torch.device) -> UnitLoss:
    """Summed Bradley-Terry loss of a micro-batch of `EncodedPair`s; one unit per pair.

    Statistics: `accuracy` (r_w > r_l) and `margin` (r_w - r_l), summed over pairs.
    """

    def fn(pairs: list[EncodedPair]) -> tuple[Tensor, dict[str, float]]:
        chosen, rejected = _chosen_rejected(rm, pairs, pad_id, device)
        margin = (chosen - rejected).detach()
        stats = {"accuracy": float((margin > 0).sum()), "margin": float(margin.sum())}
        return bradley_terry_loss(chosen, rejected).sum(), stats

    return UnitLoss(fn, lambda _: 1)


def pair_margins(rm: RewardModel, pairs: Sequence[EncodedPair], pad_id: int, device: torch.device, *,
                 batch_size: int = 8, bf16: bool | str = False) -> list[float]:
    """`r(x, y_w) - r(x, y_l)` of each pair (§10; > 0: ranked right), in eval mode, `batch_size` pairs at a time."""
    margins: list[float] = []
    with eval_mode(rm), autocast(device, bf16, rm):
        for chunk in chunks(pairs, batch_size):
            chosen, rejected = _chosen_rejected(rm, chunk, pad_id, device)
            margins += (chosen - rejected).tolist()
    return margins
