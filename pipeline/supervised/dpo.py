"""Direct preference optimisation (docs/algorithms.md §10).

    Delta = [logp(y_w) - logp(y_l)] - [logp_ref(y_w) - logp_ref(y_l)]
    loss  = -log sigmoid(beta * Delta)

Sequence log-probs are sums over the response tokens. The reference is the policy DPO starts
from: the SFT model when `model.adapter` is set, else the base model (a fresh adapter changes
nothing until it trains). Its log-probs are computed once per pair before training, so no
second copy of the model is kept, and LoRA and full fine-tuning both work. Implicit rewards:
`beta * (logp - logp_ref)` of each response; their difference is the margin. The loss itself:
`pipeline.algorithms.preference_losses.dpo_loss`; the stage: `stages/dpo.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.algorithms.preference_losses import dpo_loss
from pipeline.core.forward import SequenceBatch, completion_forward
from pipeline.core.optim import autocast, eval_mode
from pipeline.data.preference import EncodedPair, pair_batch
from pipeline.supervised.fit import UnitLoss, chunks


@dataclass
class DPOPair:
    pair: EncodedPair
    ref_chosen: float
    ref_rejected: float


def sequence_logps(model: torch.nn.Module, batch: SequenceBatch) -> Tensor:
    """Sum of the response tokens' log-probs per row [B]."""
    logp = completion_forward(model, batch).logp
    return torch.where(batch.completion_mask, logp, 0.0).sum(-1)


def _chosen_rejected(model: torch.nn.Module, pairs: Sequence[EncodedPair], pad_id: int,
                     device: torch.device) -> tuple[Tensor, Tensor]:
    logps = sequence_logps(model, pair_batch(pairs, pad_id).to(device))
    return logps[: len(pairs)], logps[len(pairs):]


def with_reference(model: torch.nn.Module, pairs: Sequence[EncodedPair], pad_id: int, device: torch.device,
                   batch_size: int = 8, bf16: bool | str = False) -> list[DPOPair]:
    """Each pair with the sequence log-probs of chosen and rejected under `model` as it is now (the reference)."""
    out = []
    with eval_mode(model), autocast(device, bf16, model):
        for chunk in chunks(pairs, batch_size):
            chosen, rejected = _chosen_rejected(model, chunk, pad_id, device)
            out += [DPOPair(p, float(c), float(r)) for p, c, r in zip(chunk, chosen, rejected)]
    return out


def dpo_objective(model: torch.nn.Module, beta: float, pad_id: int, device: torch.device) -> UnitLoss:
    """Summed DPO loss of a micro-batch of `DPOPair`s; one unit per pair.

    Statistics (summed over pairs): `accuracy` (Delta > 0; a tie counts half, so the reference
    itself scores 0.5), `margin` (beta * Delta), `chosen_reward` and `rejected_reward`
    (beta * (logp - logp_ref)), and `likelihood_accuracy` (logp(y_w) > logp(y_l)).
    """

    def fn(items: list[DPOPair]) -> tuple[Tensor, dict[str, float]]:
        chosen, rejected = _chosen_rejected(model, [i.pair for i in items], pad_id, device)
        ref_c = torch.tensor([i.ref_chosen for i in items], device=chosen.device)
        ref_r = torch.tensor([i.ref_rejected for i in items], device=chosen.device)
        losses, delta = dpo_loss(chosen, rejected, ref_c, ref_r, beta)
        delta = delta.detach()
        stats = {
            "accuracy": float((delta > 0).sum() + 0.5 * (delta == 0).sum()),
            "margin": float(beta * delta.sum()),
            "chosen_reward": float(beta * (chosen.detach() - ref_c).sum()),
            "rejected_reward": float(beta * (rejected.detach() - ref_r).sum()),
            "likelihood_accuracy": float((chosen.detach() > rejected.detach()).sum()),
        }
        return losses.sum(), stats

    return UnitLoss(fn, lambda _: 1)


def pair_outcomes(model: torch.nn.Module, pairs: Sequence[DPOPair], pad_id: int, device: torch.device,
                  batch_size: int = 8, bf16: bool | str = False) -> list[float]:
    """Per pair, as `dpo_objective`'s `accuracy`: 1 if Delta > 0 under `model` as it is now, 0.5 on a tie, else 0."""
    now = with_reference(model, [p.pair for p in pairs], pad_id, device, batch_size, bf16)
    deltas = [(n.ref_chosen - n.ref_rejected) - (p.ref_chosen - p.ref_rejected) for n, p in zip(now, pairs)]
    return [1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in deltas]


def reference_likelihood_accuracy(pairs: Sequence[DPOPair]) -> float:
    """Fraction of pairs the reference itself prefers by likelihood: logp_ref(y_w) > logp_ref(y_l)."""
    return sum(p.ref_chosen > p.ref_rejected for p in pairs) / len(pairs)
