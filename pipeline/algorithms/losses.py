"""Ratios, loss aggregation, KL estimators, log-probs and value loss, docs/algorithms.md §2-6, §9
(the sampling distribution's truncation) and §12.

Tensors are [B, T] (B completions, T token positions) with a `mask` (bool or 0/1) that is
True on the completion tokens that count. Masked positions may hold garbage (inf, NaN) in any
input: every function selects with `torch.where` first, so neither results nor gradients see it.

    ratio = token_ratio(logp, logp_old, mask)
    loss = aggregate(per_token_loss, mask, "token-mean")

The policy losses themselves are in pipeline/algorithms/policy_losses.py, KL and entropy terms in
pipeline/algorithms/regularisers.py, the rollout correction (TIS) in pipeline/algorithms/correction.py.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_KINDS = ("k1", "k2", "k3")
K3_CLAMP = 10.0
CHUNK_ROWS = 256


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


def _map_rows(fn: Callable[..., Tensor], *tensors: Tensor, chunk_rows: int) -> Tensor:
    """Apply `fn` to chunks of rows of [N, ...] tensors and concatenate the [n] results.

    With autograd on, each chunk is checkpointed: backward recomputes one chunk's vocabulary-
    sized intermediates at a time instead of keeping them all.
    """
    track = torch.is_grad_enabled() and tensors[0].requires_grad
    outs = []
    for start in range(0, tensors[0].shape[0], chunk_rows):
        parts = [t[start:start + chunk_rows] for t in tensors]
        outs.append(checkpoint(fn, *parts, use_reentrant=False) if track else fn(*parts))
    return torch.cat(outs)


def truncate_logits(z: Tensor, top_k: int = -1, top_p: float = 1.0, keep: Tensor | None = None) -> Tensor:
    """§9 the engines' sampling truncation: `z` [N, V] with -inf outside the kept set.

    Top-k keeps the tokens whose logit is at least the k-th largest (ties kept); top-p then
    keeps the smallest set of most likely tokens (under `softmax` of the top-k-filtered `z`)
    whose probability reaches `top_p`, found as in vLLM's `apply_top_k_top_p` and transformers'
    `TopPLogitsWarper`: sort ascending, drop while the cumulative probability is `<= 1 - top_p`,
    always keep the most likely token. `keep` [N] (token ids) are kept whatever their rank: the
    sampled token, which another policy's truncation (the engine's, or old weights') may have
    kept, so its log-prob stays finite. `top_k <= 0` and `top_p == 1` keep everything.
    """
    vocab = z.shape[-1]
    if not 0 < top_k < vocab and top_p >= 1.0:
        return z
    with torch.no_grad():
        cut = z.detach()
        if 0 < top_k < vocab:
            cut = cut.masked_fill(cut < cut.topk(top_k, -1).values[:, -1:], -torch.inf)
        if top_p < 1.0:
            ascending, order = cut.sort(-1)
            drop = ascending.softmax(-1).cumsum(-1) <= 1.0 - top_p
            drop[:, -1] = False
            cut = cut.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
        removed = torch.isneginf(cut)
        if keep is not None:
            removed.scatter_(-1, keep[:, None], False)
    return z.masked_fill(removed, -torch.inf)


def _entropy_rows(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    z = truncate_logits(logits.float() / temperature, top_k, top_p)
    weighted = torch.where(torch.isfinite(z), F.softmax(z, -1) * z, 0.0)
    return torch.logsumexp(z, -1) - weighted.sum(-1)


def _logprob_rows(logits: Tensor, labels: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    z = truncate_logits(logits.float() / temperature, top_k, top_p, keep=labels)
    return z.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(z, -1)


def entropy_from_logits(
    logits: Tensor, temperature: float = 1.0, chunk_rows: int = CHUNK_ROWS, *,
    top_k: int = -1, top_p: float = 1.0,
) -> Tensor:
    """§6 `H_t = -sum_a pi(a|s_t) log pi(a|s_t)` from logits [..., V] -> [...], float32.

    `pi` is the sampling distribution: `softmax(logits / temperature)` restricted to the
    `top_k` / `top_p` set (`truncate_logits`). Uses `H = logsumexp(z) - sum_a softmax(z)_a * z_a`
    on `chunk_rows` positions at a time.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    out = _map_rows(lambda z: _entropy_rows(z, temperature, top_k, top_p), flat, chunk_rows=chunk_rows)
    return out.view(logits.shape[:-1])


def token_logprobs(
    logits: Tensor, labels: Tensor, temperature: float = 1.0, chunk_rows: int = CHUNK_ROWS, *,
    top_k: int = -1, top_p: float = 1.0,
) -> Tensor:
    """`log pi(label_t | s_t)` from logits [..., V] and labels [...] -> [...], float32.

    Computed as `z[label] - logsumexp(z)` with `z = logits / temperature`, truncated to the
    `top_k` / `top_p` set when those are set (`truncate_logits`, label always kept): the
    distribution the engine sampled from and reports log-probs of (§9). `chunk_rows` positions
    at a time: no full-vocabulary log_softmax copy of the batch. Negative labels (ignore
    indices) read token 0; mask those positions.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    ids = labels.reshape(-1).clamp(min=0)
    out = _map_rows(lambda z, y: _logprob_rows(z, y, temperature, top_k, top_p), flat, ids,
                    chunk_rows=chunk_rows)
    return out.view(labels.shape)


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
