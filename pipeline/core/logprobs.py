"""Log-probs and entropies of the sampling distribution from logits, docs/algorithms.md §6 and §9.

`softmax(logits / T)` restricted to the engines' `top_k` / `top_p` set, computed a chunk of rows
at a time (checkpointed under autograd) so no full-vocabulary log_softmax copy of a batch is kept.

    logp = token_logprobs(logits, labels, temperature=1.0)        # [B, T]
    h = entropy_from_logits(logits, temperature=1.0)              # [B, T]
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

CHUNK_ROWS = 256


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
