"""Packed completions: the learner's forward with no padding but the packed rows' tails
(`rl.pack_sequences`, docs/algorithms.md §14).

The padded layout (`pipeline.core.forward.shared_prompt_forward`) gives every completion a row of
the longest one's width. Packed, completions share rows of a width W between that and twice it
(`packed_rows`): first-fit decreasing lays them end to end, whatever their group, and a row
continues the prompts of the groups it holds, which ran once through the decoder with a KV cache
as in the padded layout (the row's cache: those K prompts side by side, `prompt_cache`). One
attention mask [R, 1, W, K*P + W] lets a completion token see its own prompt and the earlier
tokens of its own completion only, and its position id counts on from its prompt's length, so
every completion token is computed from exactly the context it has in the padded layout: the
same log-probs up to rounding. The decoder computes R x W completion positions instead of
B x the longest; attention reads K*P + W keys per row instead of P + the longest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core.forward import (ForwardOut, SequenceBatch, distinct_prompts, model_parts, prompt_cache,
                                   read_completion)


@dataclass
class PackedBatch:
    """A `SequenceBatch` [B, P + T] as its D distinct prompts and R packed completion rows of width W."""
    prompt_ids: Tensor  # [D, P] left-padded, as in the batch
    prompt_mask: Tensor  # [D, P]
    input_ids: Tensor  # [R, W] completions end to end; 0 in the rows' tails
    position_ids: Tensor  # [R, W]
    row_prompts: Tensor  # [R, K] the prompts each packed row continues (its first ones; repeated to fill K)
    attention_mask: Tensor  # [R, 1, W, K * P + W] bool: query w sees key p of prompt k / the row's key w'
    token: Tensor  # [n] flat index (r * W + w) of each real completion token
    state: Tensor  # [n] its predicting state: d < D the last of prompt d, D + r * W + w a completion's
    row: Tensor  # [n] its row b of the batch
    column: Tensor  # [n] its completion column t

    @property
    def computed(self) -> int:
        """Positions the decoder computes: D x P + R x W."""
        return self.prompt_ids.numel() + self.input_ids.numel()


def first_fit_decreasing(lengths: list[int], width: int, order: list[int] | None = None) -> list[list[int]]:
    """Items (by index) into bins of total length at most `width`, longest first (`order`, when
    given, is that order already sorted), each into the first bin with room. An item longer than
    `width` gets a bin of its own."""
    bins: list[list[int]] = []
    room: list[int] = []
    for item in order if order is not None else sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        slot = next((k for k, free in enumerate(room) if free >= lengths[item]), len(bins))
        if slot == len(bins):
            bins.append([])
            room.append(width)
        bins[slot].append(item)
        room[slot] -= lengths[item]
    return bins


WIDTHS_TRIED = 32
"""`packed_rows` tries about this many row widths between L and 2L."""


def packed_rows(completion_lengths: Tensor) -> list[list[int]]:
    """The packed rows of these rows [n]: their completions (by index) end to end, whatever their
    groups, first-fit decreasing into rows of the width that computes the fewest positions, rows x
    the fullest row (the narrowest among equals), of `WIDTHS_TRIED` widths evenly spaced from L
    to 2L (L the longest completion, at least 1). Rows wider than L let completions of similar
    lengths share one. O(n x rows) per width tried."""
    lengths = [int(n) for n in completion_lengths]
    longest = max(1, *lengths)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    best: tuple[int, list[list[int]]] | None = None
    for width in sorted({*range(longest, 2 * longest, max(1, longest // WIDTHS_TRIED)), 2 * longest}):
        rows = first_fit_decreasing(lengths, width, order)
        cost = len(rows) * row_width(rows, lengths)
        if best is None or cost < best[0]:
            best = (cost, rows)
    return best[1]


def row_width(rows: list[list[int]], lengths: list[int]) -> int:
    """The width W of packed `rows` (of items of `lengths`): the fullest row's length, at least 1."""
    return max(1, *(sum(lengths[i] for i in row) for row in rows))


def packed_positions(prompt_lengths: Tensor, completion_lengths: Tensor, groups: Tensor) -> int:
    """Positions `pack` computes for these rows [n]: distinct prompts x the longest prompt plus
    packed rows x their width (`PackedBatch.computed`). Attention also reads each row's K prompts'
    keys (`pack`), which this count leaves out."""
    lengths = [int(n) for n in completion_lengths]
    rows = packed_rows(completion_lengths)
    return len(torch.unique(groups)) * int(prompt_lengths.max()) + len(rows) * row_width(rows, lengths)


def pack(batch: SequenceBatch) -> PackedBatch:
    """Pack `batch`'s completions (module docstring). Raises ValueError for a row whose prompt is
    empty (no state predicts its first token). The layout is built on the CPU and moved to the
    batch's device once; the mask is dense, R x W x (K P + W) booleans."""
    P = batch.prompt_width
    prompt_ids, prompt_mask, row_prompt = distinct_prompts(batch)
    prompt_lengths = prompt_mask.sum(-1).tolist()
    if 0 in prompt_lengths:
        raise ValueError("packing needs a prompt of at least one token in every row")
    lengths = batch.completion_mask.sum(-1).tolist()
    prompt_of, completion_ids = row_prompt.tolist(), batch.input_ids[:, P:].cpu()
    rows = packed_rows(torch.tensor(lengths))
    R, W, D = len(rows), row_width(rows, lengths), len(prompt_ids)
    # each row's prompts: those of its non-empty completions (an empty one reads none)
    held = [sorted({prompt_of[b] for b in members if lengths[b]}) or [prompt_of[members[0]]] for members in rows]
    K = max(len(prompts) for prompts in held)
    row_prompts = torch.tensor([prompts + prompts[:1] * (K - len(prompts)) for prompts in held], dtype=torch.long)
    ids = torch.zeros(R, W, dtype=torch.long)
    positions = torch.zeros(R, W, dtype=torch.long)
    segment = torch.full((R, W), -1, dtype=torch.long)  # the batch row of each token; -1 in the tails
    slot = torch.full((R, W), -1, dtype=torch.long)  # the row's prompt slot k its token continues
    token, state, batch_rows, columns = [], [], [], []
    for r, members in enumerate(rows):
        at = 0
        for b in members:
            n, g = lengths[b], prompt_of[b]
            if not n:
                continue
            ids[r, at: at + n] = completion_ids[b, :n]
            positions[r, at: at + n] = prompt_lengths[g] + torch.arange(n)
            segment[r, at: at + n] = b
            slot[r, at: at + n] = held[r].index(g)
            flat = r * W + at + torch.arange(n)
            token.append(flat)
            state.append(torch.cat([torch.tensor([g]), D + flat[:-1]]))
            batch_rows.append(torch.full((n,), b))
            columns.append(torch.arange(n))
            at += n
    own = (segment[:, :, None] == segment[:, None, :]) & torch.ones(W, W, dtype=torch.bool).tril()
    own |= torch.eye(W, dtype=torch.bool)  # a tail position sees itself
    # query (r, w) sees key p of slot k: k is its prompt's slot and p is not that prompt's padding
    prompt_visible = ((slot[:, :, None] == torch.arange(K))[..., None]
                      & prompt_mask.bool().cpu()[row_prompts][:, None]).flatten(2, 3)  # [R, W, K * P]
    device = batch.input_ids.device
    empty = torch.zeros(0, dtype=torch.long)
    flat = [torch.cat(x) if x else empty for x in (token, state, batch_rows, columns)]
    return PackedBatch(prompt_ids, prompt_mask, ids.to(device), positions.to(device), row_prompts.to(device),
                       torch.cat([prompt_visible, own], dim=-1)[:, None].to(device), *(x.to(device) for x in flat))


def packed_forward(model, batch: SequenceBatch, temperature: float = 1.0, with_entropy: bool = False,
                   entropy_grad: bool = False, *, top_k: int = -1, top_p: float = 1.0) -> ForwardOut:
    """`pipeline.core.forward.completion_forward` on the packed batch (`pack`): the same [B, T]
    log-probs (entropy, hidden states) up to rounding; positions past a row's completion read 0."""
    decoder, head = model_parts(model)
    attention = decoder.config._attn_implementation
    if attention != "sdpa":  # eager attention adds a 4D mask to the scores: a boolean one would mask nothing
        raise ValueError(f"rl.pack_sequences needs the model's sdpa attention, which reads a boolean 4D mask; "
                         f"this model runs {attention!r}")
    packed = pack(batch)
    last, cache = prompt_cache(decoder, packed.prompt_ids, packed.prompt_mask, packed.row_prompts)
    completion = decoder(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                         position_ids=packed.position_ids, past_key_values=cache, use_cache=True)
    states = torch.cat([last, completion.last_hidden_state.flatten(0, 1)])
    hidden = states[packed.state]
    read = read_completion(head, hidden, packed.input_ids.flatten()[packed.token], temperature, with_entropy,
                           entropy_grad, top_k, top_p)
    shape = batch.completion_mask.shape

    def place(x: Tensor) -> Tensor:
        full = x.new_zeros(shape + x.shape[1:])
        full[packed.row, packed.column] = x
        return full

    return ForwardOut(place(read.logp), None if read.entropy is None else place(read.entropy), place(hidden))
