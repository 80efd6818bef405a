"""How a mini-batch is cut into forward/backward passes (docs/algorithms.md §4: the update is the
same however it is cut): whole groups in a random order, and token-budget micro-batches
(`rl.micro_batch_tokens`, verl's dynamic batch size) with the positions each pass computes, in
either layout of a pass: padded (`shared_prompt_forward`) or packed (`rl.pack_sequences`,
pipeline/core/packing.py)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pipeline.core.packing import packed_positions


def group_order(rows: int, group_size: int, generator: torch.Generator) -> Tensor:
    """A random order of whole groups: micro-batches then hold few distinct prompts, each
    computed once by `shared_prompt_forward`."""
    if rows % group_size:
        raise ValueError(f"{rows} rows do not form whole groups of {group_size}")
    groups = torch.randperm(rows // group_size, generator=generator)
    return (groups[:, None] * group_size + torch.arange(group_size)).flatten()


def computed_positions(prompt_lengths: Tensor, completion_lengths: Tensor, groups: Tensor,
                       packed: bool = False) -> tuple[int, int]:
    """(positions computed, real tokens among them) when one forward runs these rows [n] each.

    Packed: what `pipeline.core.packing.pack` computes (`packed_positions`).
    Padded: mirrors `shared_prompt_forward` on the trimmed rows (`SequenceBatch.rows`): prompts are
    left-padded to the longest, completions right-padded to the longest (at least 1); rows of
    one group share a prompt computed once, unless no two rows share one (then every row
    computes prompt and completion). Everything else is padding.
    """
    rows = len(groups)
    distinct, first = torch.unique(groups, return_inverse=True)
    prompt_real = torch.zeros(len(distinct), dtype=prompt_lengths.dtype).scatter(0, first, prompt_lengths)
    real = int(prompt_real.sum() + completion_lengths.sum())
    if packed:
        return packed_positions(prompt_lengths, completion_lengths, groups), real
    width_p, width_c = int(prompt_lengths.max()), max(1, int(completion_lengths.max()))
    if len(distinct) == rows:
        return rows * (width_p + width_c), real
    return len(distinct) * width_p + rows * width_c, real


def token_budget_split(prompt_lengths: Tensor, completion_lengths: Tensor, groups: Tensor,
                       budget: int, *, pass_overhead: int, packed: bool = False) -> list[Tensor]:
    """Micro-batches (positions into the given [n] rows) of at most `budget` computed positions
    each (`rl.micro_batch_tokens`; verl's dynamic batch size) that cost the least: computed
    positions (`computed_positions`: padding, and prompts computed once per micro-batch) plus
    `pass_overhead` per pass (`rl.pass_overhead_tokens`: what one more forward/backward costs,
    in positions), the fewer passes among equal costs. A small overhead gives narrower passes
    and less padding; a large one the fewest passes (verl's split).

    Rows are ordered by completion length, longest first (a group's rows of one length
    together); the micro-batches are runs of that order, found by dynamic programming over the
    run ends: O(n^2) for n rows.
    A row over the budget on its own is a micro-batch.
    Packed: one pass when the whole set fits the budget; else the rows, longest completion first
    (a group's together), fill each pass in turn while `pack` of it computes at most `budget`
    positions (`packed_positions`).
    """
    order = sorted(range(len(groups)), key=lambda i: (-int(completion_lengths[i]), int(groups[i]), i))
    if packed:
        return _packed_split(prompt_lengths, completion_lengths, groups, budget, order)
    prompt = [int(prompt_lengths[i]) for i in order]
    width = [max(1, int(completion_lengths[i])) for i in order]
    group = [int(groups[i]) for i in order]
    best: list[tuple[float, int]] = [(0, 0)] + [(math.inf, 0)] * len(order)  # (cost, passes)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        seen: set[int] = set()
        widest_prompt = 0
        for first in range(end - 1, -1, -1):  # the run order[first:end]; its longest completion is first
            seen.add(group[first])
            widest_prompt = max(widest_prompt, prompt[first])
            rows = end - first
            if len(seen) == rows:
                computed = rows * (widest_prompt + width[first])
            else:
                computed = len(seen) * widest_prompt + rows * width[first]
            if computed > budget and rows > 1:
                break
            total = (best[first][0] + computed + pass_overhead, best[first][1] + 1)
            if total < best[end]:
                best[end], start[end] = total, first
    parts: list[Tensor] = []
    end = len(order)
    while end:
        parts.append(torch.tensor(order[start[end]:end]))
        end = start[end]
    return parts[::-1]


def _packed_split(prompt_lengths: Tensor, completion_lengths: Tensor, groups: Tensor, budget: int,
                  order: list[int]) -> list[Tensor]:
    """`token_budget_split` of packed passes (its docstring), filled in `order`."""
    if packed_positions(prompt_lengths, completion_lengths, groups) <= budget:
        return [torch.arange(len(groups))]
    parts: list[list[int]] = []
    for row in order:
        if parts:
            candidate = torch.tensor(parts[-1] + [row])
            if packed_positions(prompt_lengths[candidate], completion_lengths[candidate], groups[candidate]) <= budget:
                parts[-1].append(row)
                continue
        parts.append([row])
    return [torch.tensor(part) for part in parts]
