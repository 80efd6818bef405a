"""Direct preference optimisation (docs/algorithms.md §10).

    Delta = [logp(y_w) - logp(y_l)] - [logp_ref(y_w) - logp_ref(y_l)]
    loss  = -log sigmoid(beta * Delta)

Sequence log-probs are sums over the response tokens. The reference is the policy DPO starts
from: the SFT model when `model.adapter` is set, else the base model (a fresh adapter changes
nothing until it trains). Its log-probs are computed once per pair before training, so no
second copy of the model is kept, and LoRA and full fine-tuning both work. Implicit rewards:
`beta * (logp - logp_ref)` of each response; their difference is the margin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.config import Config
from pipeline.core.forward import SequenceBatch, completion_forward
from pipeline.core.models import load_policy
from pipeline.core.optim import autocast
from pipeline.data.preference import EncodedPair, held_out_accuracy, pair_batch, preference_data
from pipeline.supervised.fit import UnitLoss, evaluate, finish_stage, start_stage, train_and_measure

log = logging.getLogger(__name__)


@dataclass
class DPOPair:
    pair: EncodedPair
    ref_chosen: float
    ref_rejected: float


def dpo_loss(logp_chosen: Tensor, logp_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float) -> tuple[Tensor, Tensor]:
    """Per-pair §10 DPO loss [B] and `Delta` [B]."""
    delta = (logp_chosen - logp_rejected) - (ref_chosen - ref_rejected)
    return -F.logsigmoid(beta * delta), delta


def sequence_logps(model: torch.nn.Module, batch: SequenceBatch) -> Tensor:
    """Sum of the response tokens' log-probs per row [B]."""
    logp = completion_forward(model, batch).logp
    return torch.where(batch.completion_mask, logp, 0.0).sum(-1)


def _chosen_rejected(model: torch.nn.Module, pairs: Sequence[EncodedPair], pad_id: int,
                     device: torch.device) -> tuple[Tensor, Tensor]:
    logps = sequence_logps(model, pair_batch(pairs, pad_id).to(device))
    return logps[: len(pairs)], logps[len(pairs):]


@torch.no_grad()
def with_reference(model: torch.nn.Module, pairs: Sequence[EncodedPair], pad_id: int, device: torch.device,
                   batch_size: int = 8, bf16: bool | str = False) -> list[DPOPair]:
    """Each pair with the sequence log-probs of chosen and rejected under `model` as it is now (the reference)."""
    out = []
    was_training = model.training
    model.eval()
    with autocast(device, bf16):
        for start in range(0, len(pairs), batch_size):
            chunk = list(pairs[start:start + batch_size])
            chosen, rejected = _chosen_rejected(model, chunk, pad_id, device)
            out += [DPOPair(p, float(c), float(r)) for p, c, r in zip(chunk, chosen, rejected)]
    model.train(was_training)
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


def run_dpo(config: Config, out: Path) -> dict[str, Any]:
    """Train per `config.dpo`; writes `out/adapter` (`out/model` after full fine-tuning) and metrics.json."""
    start = time.perf_counter()
    setup = start_stage(config, out)
    cfg, device, pad_id = config.dpo, setup.device, setup.tokenizer.pad_token_id
    train, held, info = preference_data(config, cfg, setup, out)
    policy = load_policy(setup.model_path, config.lora, adapter=config.model.adapter, dtype=config.model.dtype,
                         device=device)
    train_items, held_items = (with_reference(policy, pairs, pad_id, device, cfg.batch_size, cfg.bf16_autocast)
                               for pairs in (train, held))
    loss = dpo_objective(policy, cfg.beta, pad_id, device)
    kw = {"device": device, "micro_batch_size": cfg.batch_size}
    metrics = train_and_measure(policy, train_items, loss, cfg, out=out, batch_size=cfg.batch_size,
                                epochs=cfg.epochs, seed=config.seed, desc="dpo",
                                measure=lambda: evaluate(policy, held_items, loss, bf16=cfg.bf16_autocast, **kw),
                                **kw)
    saved = out / ("adapter" if hasattr(policy, "peft_config") else "model")
    policy.save_pretrained(saved)
    setup.tokenizer.save_pretrained(saved)
    outcomes = pair_outcomes(policy, held_items, pad_id, device, cfg.batch_size, cfg.bf16_autocast)
    summary = {
        "output": str(saved),
        **held_out_accuracy(outcomes, held),
        "reference_pairwise_accuracy": 0.5,  # the reference's Delta is 0 on every pair (ties count half)
        "reward_margin": metrics["margin_after"],
        "chosen_reward": metrics["chosen_reward_after"],
        "rejected_reward": metrics["rejected_reward_after"],
        "likelihood_accuracy": metrics["likelihood_accuracy_after"],
        "reference_likelihood_accuracy": reference_likelihood_accuracy(held_items),
    }
    summary["beats_reference"] = summary["pairwise_accuracy"] > summary["reference_pairwise_accuracy"]
    if not summary["beats_reference"]:
        log.warning("DPO's held-out pairwise accuracy %.3f does not beat the reference's 0.5",
                    summary["pairwise_accuracy"])
    return finish_stage(out, {**summary, **metrics, **info, "time_s": time.perf_counter() - start})
