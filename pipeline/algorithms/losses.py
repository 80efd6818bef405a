"""Ratios, loss aggregation, KL estimators and value loss, docs/algorithms.md §2-5 and §12.

Tensors are [B, T] (B completions, T token positions) with a `mask` (bool or 0/1) that is
True on the completion tokens that count. Masked positions may hold garbage (inf, NaN) in any
input: every function selects with `torch.where` first, so neither results nor gradients see it.

    ratio = token_ratio(logp, logp_old, mask)
    loss = aggregate(per_token_loss, mask, "token-mean")

The policy losses themselves are in pipeline/algorithms/policy_losses.py, KL and entropy terms in
pipeline/algorithms/regularisers.py, the rollout correction (TIS) in pipeline/algorithms/correction.py, log-probs
and entropies from logits in pipeline/core/logprobs.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_KINDS = ("k1", "k2", "k3")
K3_CLAMP = 10.0


def token_ratio(logp: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    """§2 `r_it = exp(logp_theta(o_it) - logp_old(o_it))`; 1 at masked positions."""
    mask = mask.bool()
    return torch.exp(torch.where(mask, logp - logp_old, 0.0))


def gspo_sequence_ratio(logp: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    """§2 GSPO `s_i = exp((1/|o_i|) * sum_t (logp_theta(o_it) - logp_old(o_it)))`, shape [B]."""
    mask = mask.bool()
    log_ratio = torch.where(mask, logp - logp_old, 0.0).sum(-1)
    return torch.exp(log_ratio / mask.sum(-1).clamp(min=1))


def gspo_token_ratio(logp: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    """§2 GSPO-token `s_it = sg(s_i) * exp(logp_theta(o_it) - sg(logp_theta(o_it)))`, [B, T].

    Its value is `s_i` on every token; its gradient is `s_i * grad logp_theta(o_it)` per token.
    """
    s = gspo_sequence_ratio(logp, logp_old, mask).detach()
    return s[:, None] * torch.exp(torch.where(mask.bool(), logp - logp.detach(), 0.0))


def aggregate(
    loss: Tensor, mask: Tensor, mode: str, num_tokens: int | None = None,
    num_seqs: int | None = None, max_len: int | None = None,
) -> Tensor:
    """§4 turn per-token losses [B, T] into one number.

    * `token-mean`: `sum_{i,t} l_it / num_tokens`
    * `seq-mean-token-mean`: `sum_i mean_t(l_it) / num_seqs`
    * `seq-mean-token-sum-norm`: `sum_{i,t} l_it / (num_seqs * max_len)` (Dr.GRPO's constant)

    For gradient accumulation pass the optimiser step's totals: `num_tokens` its unmasked
    tokens, `num_seqs` its sequences with at least one unmasked token, `max_len` the generation
    limit L_max; the micro-batch losses then sum to the full-batch loss. Defaults are this
    batch's counts and, for `max_len`, its width T.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGG_MODES)}")
    mask = mask.bool()
    token_losses, lengths = torch.where(mask, loss, 0.0), mask.sum(-1)
    if mode == "token-mean":
        return token_losses.sum() / max(int(lengths.sum()) if num_tokens is None else num_tokens, 1)
    if num_seqs is None:
        num_seqs = int((lengths > 0).sum())
    if mode == "seq-mean-token-mean":
        return (token_losses.sum(-1) / lengths.clamp(min=1)).sum() / max(num_seqs, 1)
    max_len = mask.shape[-1] if max_len is None else max_len
    return token_losses.sum() / max(num_seqs * max_len, 1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` over the unmasked entries (0 if there are none)."""
    mask = mask.bool()
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def kl_estimate(logp: Tensor, logp_ref: Tensor, kind: str, mask: Tensor | None = None) -> Tensor:
    """§5 per-token KL(pi_theta || pi_ref) estimators with `d = logp_ref - logp_theta`, [B, T].

    k1 `-d`; k2 `0.5*d^2`; k3 `exp(d) - d - 1`, clamped to [-10, 10] (d is first clamped to
    [-20, 20], where k3 already exceeds 10, so exp never overflows into a NaN gradient).
    Positions where `mask` is False are 0.
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(KL_KINDS)}")
    d = logp_ref - logp
    if mask is not None:
        d = torch.where(mask.bool(), d, 0.0)
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d**2
    d = d.clamp(-2 * K3_CLAMP, 2 * K3_CLAMP)
    return (torch.exp(d) - d - 1.0).clamp(-K3_CLAMP, K3_CLAMP)


def value_loss(
    values: Tensor, values_old: Tensor, returns: Tensor, mask: Tensor, clip: float,
    agg: str = "token-mean", **normalisers: int | None,
) -> tuple[Tensor, dict[str, float]]:
    """§12 PPO clipped value loss `0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)`.

    Per-token losses are aggregated like the policy loss (§4); stats: `vf_loss`, `vf_clip_frac`
    (`train/vf_loss`, `train/vf_clip_frac`: share of tokens where the clipped branch is the larger one).
    """
    mask = mask.bool()
    values, values_old, returns = (torch.where(mask, x, 0.0)
                                   for x in (values, values_old.detach(), returns.detach()))
    clipped = values_old + torch.clamp(values - values_old, -clip, clip)
    unclipped_sq, clipped_sq = (values - returns) ** 2, (clipped - returns) ** 2
    loss = aggregate(0.5 * torch.maximum(unclipped_sq, clipped_sq), mask, agg, **normalisers)
    frac = masked_mean((clipped_sq > unclipped_sq).float(), mask)
    return loss, {"train/vf_loss": loss.item(), "train/vf_clip_frac": frac.item()}
