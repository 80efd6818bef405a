"""Batches of (prompt, completion) token ids and the learner's forward pass over them.

Layout: prompts left-padded to width P, completions right-padded to width T, so completion
token t of every row sits at column P + t and is predicted by the hidden state at P + t - 1.
The language-model head runs on those T positions only, and log-probabilities are read
without a full-vocabulary log_softmax copy: a frozen head fused with the read, a chunk of rows
at a time (`pipeline.core.logprobs.linear_logprobs`), a trained one through its logits
(`pipeline.core.logprobs.token_logprobs`).

Which distribution (docs/algorithms.md §9): the engines report the log-prob of each sampled
token under the distribution it was drawn from, `softmax(logits / T)` restricted to the top-k /
top-p set and renormalised (vLLM runs with `logprobs_mode="processed_logprobs"`; the HF engine
records the same, `pipeline.rollout.base`). vLLM's default `raw_logprobs` would instead report
the untruncated distribution at T = 1, which is not the behaviour policy whenever T != 1 or
top-k / top-p is set. So the learner's forward takes the same `temperature`, `top_k` and `top_p`
and truncates its logits the same way before the log-softmax (`pipeline.core.logprobs.truncate_logits`):
logp, logp_old, logp_ref and entropy are all of that one sampling distribution, and with
identical weights the ratio and the TIS weight are 1 on every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pipeline.core.logprobs import entropy_from_logits, linear_logprobs, token_logprobs

if TYPE_CHECKING:
    from transformers import Cache


@dataclass
class SequenceBatch:
    input_ids: Tensor  # [B, P + T]
    attention_mask: Tensor  # [B, P + T]
    prompt_width: int  # P
    completion_mask: Tensor  # [B, T] bool: real completion tokens

    @property
    def completion_ids(self) -> Tensor:
        return self.input_ids[:, self.prompt_width:]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: Tensor | list[int]) -> SequenceBatch:
        """The given rows, with columns that are padding in all of them trimmed away."""
        ids, attn, comp = self.input_ids[index], self.attention_mask[index], self.completion_mask[index]
        prompt_attn = attn[:, : self.prompt_width]
        first = int(prompt_attn.any(0).float().argmax()) if prompt_attn.any() else 0
        width = int(comp.any(0).nonzero().max()) + 1 if comp.any() else 1
        end = self.prompt_width + width
        return SequenceBatch(ids[:, first:end], attn[:, first:end], self.prompt_width - first, comp[:, :width])

    def to(self, device: torch.device) -> SequenceBatch:
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device),
                             self.prompt_width, self.completion_mask.to(device))


def collate(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> SequenceBatch:
    """Left-pad prompts and right-pad completions into one [B, P + T] batch."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    P = max(len(p) for p in prompts)
    T = max(1, max(len(c) for c in completions))
    ids = torch.full((len(prompts), P + T), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    comp = torch.zeros(len(prompts), T, dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, P - len(p): P] = torch.tensor(p, dtype=torch.long)
        ids[i, P: P + len(c)] = torch.tensor(c, dtype=torch.long)
        attn[i, P - len(p): P + len(c)] = 1
        comp[i, : len(c)] = True
    return SequenceBatch(ids, attn, P, comp)


def distinct_prompts(batch: SequenceBatch) -> tuple[Tensor, Tensor, Tensor]:
    """The batch's distinct prompts: their ids and attention mask [D, P] (left-padded as in the
    batch) and, for each row, the index of its prompt [B]."""
    P = batch.prompt_width
    key = torch.cat([batch.input_ids[:, :P], batch.attention_mask[:, :P]], dim=1)
    distinct, row_prompt = torch.unique(key, dim=0, return_inverse=True)
    return distinct[:, :P], distinct[:, P:], row_prompt


def model_parts(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder body and the LM head of a plain or peft-wrapped causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def hidden_states(model, batch: SequenceBatch) -> Tensor:
    """Last-layer hidden states [B, P + T, H]; positions count real tokens only."""
    decoder, _ = model_parts(model)
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                  position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


@dataclass
class ForwardOut:
    logp: Tensor  # [B, T] float32, log pi(o_t | s_t) at the given temperature, top-k and top-p
    entropy: Tensor | None  # [B, T] float32, when asked (with gradient when asked with one)
    hidden: Tensor  # [B, T, H] the states s_t that predict completion tokens (for a value head)


def completion_forward(model, batch: SequenceBatch, temperature: float = 1.0,
                       with_entropy: bool = False, entropy_grad: bool = False, *, top_k: int = -1,
                       top_p: float = 1.0) -> ForwardOut:
    """Per-token log-probs (and entropy) of the completion tokens, head on those positions only.

    `temperature`, `top_k`, `top_p`: the sampling distribution to read (module docstring);
    the defaults give the model's plain distribution. `entropy_grad`: the entropy carries a
    gradient (an entropy bonus in the loss, §6); otherwise it is a statistic computed without one.
    """
    _, head = model_parts(model)
    P, T = batch.prompt_width, batch.completion_mask.shape[1]
    hidden = hidden_states(model, batch)[:, P - 1: P - 1 + T]
    return read_completion(head, hidden, batch.input_ids[:, P: P + T], temperature, with_entropy,
                           entropy_grad, top_k, top_p)


def read_completion(head: torch.nn.Module, hidden: Tensor, labels: Tensor, temperature: float,
                    with_entropy: bool, entropy_grad: bool, top_k: int, top_p: float) -> ForwardOut:
    """The LM head on the states that predict `labels` [B, T], read as log-probs (and entropy).

    A frozen linear head (LoRA, or no gradient) is fused with the read (`linear_logprobs`: the
    logits of a chunk of rows at a time, gradients from per-row Jacobians); a trained head runs
    on all rows, then `token_logprobs` reads its logits."""
    if isinstance(head, torch.nn.Linear) and not any(p.requires_grad for p in head.parameters()):
        logp, entropy = linear_logprobs(hidden, head.weight, labels, temperature, bias=head.bias, top_k=top_k,
                                        top_p=top_p, with_entropy=with_entropy, entropy_grad=entropy_grad)
        return ForwardOut(logp, entropy, hidden)
    logits = head(hidden)
    logp = token_logprobs(logits, labels, temperature, top_k=top_k, top_p=top_p)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits if entropy_grad else logits.detach(), temperature,
                                          top_k=top_k, top_p=top_p)
    return ForwardOut(logp, entropy, hidden)


def prompt_cache(decoder: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor,
                 select: Tensor) -> tuple[Tensor, Cache]:
    """Run the distinct prompts [D, P] (left-padded) through `decoder` once: their last states
    [D, H] and their KV cache gathered to one entry per row of `select`: [R] one prompt per
    entry, or [R, K] K prompts side by side (keys K x P wide, prompt k at columns k*P..k*P+P-1).
    Gradients reach the prompts' keys and values through the gather. ValueError: an [R, K]
    `select` on cache layers other than plain `DynamicLayer`s (their extra state would not follow)."""
    prompt = decoder(input_ids=prompt_ids, attention_mask=prompt_mask,
                     position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True)
    cache = prompt.past_key_values
    if select.dim() == 1:
        cache.batch_select_indices(select)
    else:
        from transformers.cache_utils import DynamicLayer

        for layer in cache.layers:  # [D, heads, P, d] -> [R, K, heads, P, d] -> [R, heads, K * P, d]
            if type(layer) is not DynamicLayer:  # a sliding window or an indexer keeps more state than K/V
                raise ValueError(f"prompts side by side need plain KV cache layers, not {type(layer).__name__}")
            layer.keys, layer.values = (x[select].transpose(1, 2).flatten(2, 3) for x in (layer.keys, layer.values))
    return prompt.last_hidden_state[:, -1], cache


def shared_prompt_forward(model, batch: SequenceBatch, temperature: float = 1.0,
                          with_entropy: bool = False, entropy_grad: bool = False, *, top_k: int = -1,
                          top_p: float = 1.0) -> ForwardOut:
    """`completion_forward`, computing each distinct prompt of the batch once.

    The G samples of a group share their prompt, often most of a row's tokens. The distinct
    prompts go through the decoder once (with a KV cache), the cache is gathered to one entry
    per row, and the completions run on top of it. Gradients reach the prompt's keys and
    values through the gather, so the result equals `completion_forward`'s (up to rounding).
    """
    P, T = batch.prompt_width, batch.completion_mask.shape[1]
    prompt_ids, prompt_mask, row_prompt = distinct_prompts(batch)
    if len(prompt_ids) == len(batch):  # nothing shared
        return completion_forward(model, batch, temperature, with_entropy, entropy_grad, top_k=top_k, top_p=top_p)
    decoder, head = model_parts(model)
    last, cache = prompt_cache(decoder, prompt_ids, prompt_mask, row_prompt)
    completion_ids = batch.input_ids[:, P:]
    positions = prompt_mask.sum(-1)[row_prompt, None] + torch.arange(T, device=completion_ids.device)
    attention = torch.cat([prompt_mask[row_prompt], batch.attention_mask[:, P:]], dim=1)
    completion = decoder(input_ids=completion_ids, attention_mask=attention, position_ids=positions,
                         past_key_values=cache, use_cache=True)
    # Token t is predicted by the state before it: the prompt's last state for t = 0.
    hidden = torch.cat([last[row_prompt, None], completion.last_hidden_state[:, :-1]], dim=1)
    return read_completion(head, hidden, completion_ids, temperature, with_entropy, entropy_grad, top_k, top_p)


def pad_columns(x: Tensor, width: int, value: float = 0.0) -> Tensor:
    """Right-pad [B, t] to [B, width] (outputs of trimmed rows back to the batch's width)."""
    if x.shape[1] == width:
        return x
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)
