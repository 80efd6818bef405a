"""Log-probs and entropies of the sampling distribution from logits, docs/algorithms.md §6 and §9.

`softmax(logits / T)` restricted to the engines' `top_k` / `top_p` set, computed a chunk of rows
at a time (checkpointed under autograd) so no full-vocabulary log_softmax copy of a batch is kept.

    logp = token_logprobs(logits, labels, temperature=1.0)        # [B, T]
    h = entropy_from_logits(logits, temperature=1.0)              # [B, T]

From hidden states and a frozen LM head (the learner's passes, pipeline/core/forward.py), the
logits of one chunk of rows exist at a time, never the batch's, and nothing is recomputed:

    logp, h = linear_logprobs(hidden, head.weight, labels, with_entropy=True)   # [B, T] each
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

CHUNK_LOGITS = 2**22
"""Logits per chunk: `CHUNK_LOGITS // V` positions (85 at SmolLM2's V = 49152). A chunk's float32
tensors (16 MiB) stay below glibc's 32 MiB mmap threshold, so the allocator reuses their memory
from chunk to chunk instead of mapping and faulting in fresh pages for every vocabulary-sized op
(at 256 positions, 50 MiB, each such op took about 6x as long on a 2-core CPU)."""


EXP_FLOOR = -60.0
"""The fused read gives probability 0 to a token whose shifted logit `z - max z` is below this (its
true probability is under `e^-60`, so the mass dropped is under `V e^-60` of the sum, 1e-22 for
SmolLM2: far below float32 rounding). No denormal then reaches the exp, the division or the
products after it (each several times slower on denormals on x86, and `torch.set_flush_denormal`
reaches only the calling thread, not the intra-op workers); `z` spread wider than 87 makes them
otherwise: SmolLM2-135M's logits spread 29-56 per position, 93 at temperature 0.6. A logit of -inf
(a masked vocabulary entry) counts as 0 the same way."""


def _chunk(chunk_rows: int | None, vocab: int) -> int:
    """Positions per chunk: `chunk_rows`, or by default `CHUNK_LOGITS // vocab` (at least 1)."""
    return chunk_rows or max(1, CHUNK_LOGITS // vocab)


def _map_rows(fn: Callable[..., Tensor], *tensors: Tensor, chunk_rows: int | None) -> Tensor:
    """Apply `fn` to chunks of rows of [N, ...] tensors and concatenate the [n] results.

    With autograd on, each chunk is checkpointed: backward recomputes one chunk's vocabulary-
    sized intermediates at a time instead of keeping them all.
    """
    track = torch.is_grad_enabled() and tensors[0].requires_grad
    chunk_rows = _chunk(chunk_rows, tensors[0].shape[-1])
    outs = []
    for start in range(0, max(1, tensors[0].shape[0]), chunk_rows):  # no rows: one empty chunk
        parts = [t[start:start + chunk_rows] for t in tensors]
        outs.append(checkpoint(fn, *parts, use_reentrant=False) if track else fn(*parts))
    return torch.cat(outs)


def truncation_mask(z: Tensor, top_k: int = -1, top_p: float = 1.0) -> Tensor | None:
    """§9 the engines' sampling truncation of `z` [N, V]: True outside the kept set [N, V] bool, or
    None where `top_k <= 0` and `top_p == 1` keep everything.

    Top-k keeps the tokens whose logit is at least the k-th largest (ties kept); top-p then
    keeps the smallest set of most likely tokens (under `softmax` of the top-k-filtered `z`)
    whose probability reaches `top_p`, found as in vLLM's `apply_top_k_top_p` and transformers'
    `TopPLogitsWarper`: sort ascending, drop while the cumulative probability is `<= 1 - top_p`,
    always keep the most likely token.
    """
    vocab = z.shape[-1]
    if not 0 < top_k < vocab and top_p >= 1.0:
        return None
    with torch.no_grad():
        cut = z.detach()
        if 0 < top_k < vocab:
            cut = cut.masked_fill(cut < cut.topk(top_k, -1).values[:, -1:], -torch.inf)
        if top_p < 1.0:
            ascending, order = cut.sort(-1)
            drop = ascending.softmax(-1).cumsum(-1) <= 1.0 - top_p
            drop[:, -1] = False
            cut = cut.masked_fill(drop.scatter(-1, order, drop), -torch.inf)
        return torch.isneginf(cut)


def truncate_logits(z: Tensor, top_k: int = -1, top_p: float = 1.0, keep: Tensor | None = None) -> Tensor:
    """`z` [N, V] with -inf outside the kept set (`truncation_mask`). `keep` [N] (token ids) are
    kept whatever their rank: the sampled token, which another policy's truncation (the engine's,
    or old weights') may have kept, so its log-prob stays finite."""
    removed = truncation_mask(z, top_k, top_p)
    if removed is None:
        return z
    if keep is not None:
        removed.scatter_(-1, keep[:, None], False)
    return z.masked_fill(removed, -torch.inf)


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    """`logits / temperature` in float32 (no division at temperature 1: the same values)."""
    z = logits.float()
    return z if temperature == 1.0 else z / temperature


def _entropy_rows(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    z = truncate_logits(_scaled(logits, temperature), top_k, top_p)
    return torch.logsumexp(z, -1) - _mean_logit(F.softmax(z, -1), z)


def _mean_logit(p: Tensor, z: Tensor) -> Tensor:
    """`sum_a p_a z_a` over the kept set (z = -inf, p = 0 outside it: no 0 * inf in value or gradient)."""
    return (p * torch.where(torch.isfinite(z), z, 0.0)).sum(-1)


def _logprob_rows(logits: Tensor, labels: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    z = truncate_logits(_scaled(logits, temperature), top_k, top_p, keep=labels)
    return z.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(z, -1)


def entropy_from_logits(
    logits: Tensor, temperature: float = 1.0, chunk_rows: int | None = None, *,
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
    logits: Tensor, labels: Tensor, temperature: float = 1.0, chunk_rows: int | None = None, *,
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


def _read_chunk(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, temperature: float,
                top_k: int, top_p: float, with_entropy: bool, jacobians: tuple[bool, bool],
                ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """One chunk of rows: logp [n], entropy [n] (or None), and as `jacobians` asks the per-row
    gradients d logp / d hidden and d H / d hidden [n, H] float32 (else None).

    In closed form from one softmax `p` of `z = (hidden @ weight.T + bias) / T` over the kept set
    (docs/algorithms.md §6): `H = lse - mu` with `lse = logsumexp(z)`, `mu = sum_a p_a z_a` and
    `d H / d z = -p (z - mu)`; `logp = z_y - lse_y`, where the label y joins the set when the
    truncation dropped it (`lse_y = logaddexp(lse, z_y)`, else `lse`), with `d logp / d z =
    onehot(y) - q`, q the softmax over the set with y: `p exp(lse - lse_y)`, and `exp(logp)` at a
    dropped y. Then `d z / d logits = 1 / T` and `d logits / d hidden = weight`. The same values and
    gradients as `_logprob_rows` / `_entropy_rows` under autograd (tests/test_fused_logprobs.py),
    with no autograd graph over the vocabulary.
    """
    z = _scaled(F.linear(hidden, weight, bias), temperature)
    removed = truncation_mask(z, top_k, top_p)
    peak = (z if removed is None else z.masked_fill(removed, -torch.inf)).amax(-1, keepdim=True)
    shifted = torch.sub(z, peak)  # <= 0 on the kept set
    ignored = shifted < EXP_FLOOR  # p = 0 there: below the floor (a logit of -inf included), or
    if removed is not None:  # outside the kept set
        ignored |= removed
    shifted.masked_fill_(ignored, 0.0)  # finite everywhere: sum_a p_a z_a = peak + sum_a p_a shifted_a
    p = shifted.exp().masked_fill_(ignored, 0.0)
    total = p.sum(-1, keepdim=True)
    p.div_(total)
    lse = (peak + total.log()).squeeze(-1)
    z_y = z.gather(-1, labels[:, None]).squeeze(-1)
    dropped = torch.zeros_like(z_y) if removed is None else removed.gather(-1, labels[:, None]).squeeze(-1).float()
    lse_y = torch.where(dropped > 0, torch.logaddexp(lse, z_y), lse)
    logp = z_y - lse_y
    entropy = jac_logp = jac_entropy = None
    if with_entropy or jacobians[1]:
        mu_shifted = torch.linalg.vecdot(p, shifted)  # mu - peak
        entropy = total.log().squeeze(-1) - mu_shifted  # (lse - peak) - (mu - peak)
    if jacobians[0]:
        label_weight = (1 - dropped * logp.exp())[:, None] * weight[labels].float()
        jac_logp = (label_weight - (lse - lse_y).exp()[:, None] * (p.to(weight.dtype) @ weight).float()) / temperature
    if jacobians[1]:
        jac_entropy = -((p * (shifted - mu_shifted[:, None])).to(weight.dtype) @ weight).float() / temperature
    return logp, entropy, jac_logp, jac_entropy


def _read_rows(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, temperature: float,
               top_k: int, top_p: float, with_entropy: bool, jacobians: tuple[bool, bool], chunk_rows: int | None,
               ) -> list[Tensor | None]:
    """`_read_chunk` over `chunk_rows` rows of hidden [N, H] at a time (in the head's dtype), concatenated."""
    chunk_rows = _chunk(chunk_rows, weight.shape[0])
    chunks = [_read_chunk(hidden[i:i + chunk_rows].to(weight.dtype), weight, bias, labels[i:i + chunk_rows],
                          temperature, top_k, top_p, with_entropy, jacobians)
              for i in range(0, max(1, hidden.shape[0]), chunk_rows)]  # no rows: one empty chunk
    return [None if parts[0] is None else torch.cat(parts) for parts in zip(*chunks)]


class _Linearised(torch.autograd.Function):
    """Per-row reads of `hidden` [N, H] with their gradients computed beforehand: logp_t and H_t
    depend on row t only, so d loss / d h_t = g_logp_t * d logp_t / d h_t + g_H_t * d H_t / d h_t,
    and backward keeps no vocabulary-sized tensor."""

    @staticmethod
    def forward(ctx, hidden, logp, entropy, jac_logp, jac_entropy):
        ctx.save_for_backward(jac_logp, jac_entropy)
        ctx.hidden_dtype = hidden.dtype
        logp, entropy = logp.clone(), entropy.clone()
        if jac_entropy is None:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        jac_logp, jac_entropy = ctx.saved_tensors
        grad = grad_logp[:, None] * jac_logp
        if jac_entropy is not None and grad_entropy is not None:
            grad = grad + grad_entropy[:, None] * jac_entropy
        return grad.to(ctx.hidden_dtype), None, None, None, None


def linear_logprobs(
    hidden: Tensor, weight: Tensor, labels: Tensor, temperature: float = 1.0, chunk_rows: int | None = None, *,
    bias: Tensor | None = None, top_k: int = -1, top_p: float = 1.0, with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """`token_logprobs` (and `entropy_from_logits`) of the logits `hidden @ weight.T + bias`, fused.

    hidden [..., H], weight [V, H] (a frozen LM head), labels [...] -> logp [...] float32 and
    entropy [...] float32 or None (`with_entropy`). `chunk_rows` rows at a time: their logits
    [chunk_rows, V] are the only vocabulary-sized tensors. Under autograd the gradient to
    `hidden` comes from per-row Jacobians computed in the same pass (`_Linearised`): no logits kept
    for backward and none recomputed. The entropy carries a gradient only with `entropy_grad`.
    Under autocast the head runs in the autocast dtype (the weight cast once per call), as
    autocast's `linear` would. Raises ValueError when `weight` or `bias` requires a gradient.
    """
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError("linear_logprobs reads through a frozen head; a trained head needs token_logprobs")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
    flat = hidden.reshape(-1, hidden.shape[-1])
    ids = labels.reshape(-1).clamp(min=0)
    track = torch.is_grad_enabled() and hidden.requires_grad
    entropy_grad = track and with_entropy and entropy_grad
    with torch.autocast(device, enabled=False):  # the head in `dtype` as cast above; the rest float32
        logp, entropy, jac_logp, jac_entropy = _read_rows(flat.detach(), weight, bias, ids, temperature, top_k,
                                                          top_p, with_entropy, (track, entropy_grad), chunk_rows)
    if track:
        logp, entropy_out = _Linearised.apply(flat, logp, logp.new_empty(0) if entropy is None else entropy,
                                              jac_logp, jac_entropy)
        entropy = entropy_out if with_entropy else None
    return logp.view(labels.shape), None if entropy is None else entropy.view(labels.shape)
