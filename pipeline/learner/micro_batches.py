"""How a mini-batch is cut into forward/backward passes (docs/algorithms.md §4: the update is the
same however it is cut): whole groups in a random order, and token-budget micro-batches
(`rl.micro_batch_tokens`, verl's dynamic batch size) with the positions each pass computes."""

from __future__ import annotations

import torch
from torch import Tensor


def group_order(rows: int, group_size: int, generator: torch.Generator) -> Tensor:
    """A random order of whole groups: micro-batches then hold few distinct prompts, each
    computed once by `shared_prompt_forward`."""
    if rows % group_size:
        raise ValueError(f"{rows} rows do not form whole groups of {group_size}")
    groups = torch.randperm(rows // group_size, generator=generator)
    return (groups[:, None] * group_size + torch.arange(group_size)).flatten()


def computed_positions(prompt_lengths: Tensor, completion_lengths: Tensor, groups: Tensor) -> tuple[int, int]:
    """(positions computed, real tokens among them) when one forward runs these rows [n] each.

    Mirrors `shared_prompt_forward` on the trimmed rows (`SequenceBatch.rows`): prompts are
    left-padded to the longest, completions right-padded to the longest (at least 1); rows of
    one group share a prompt computed once, unless no two rows share one (then every row
    computes prompt and completion). Everything else is padding.
    """
    rows = len(groups)
    distinct, first = torch.unique(groups, return_inverse=True)
    width_p, width_c = int(prompt_lengths.max()), max(1, int(completion_lengths.max()))
    if len(distinct) == rows:
        return rows * (width_p + width_c), int(prompt_lengths.sum() + completion_lengths.sum())
    prompt_real = torch.zeros(len(distinct), dtype=prompt_lengths.dtype).scatter(0, first, prompt_lengths)
    return len(distinct) * width_p + rows * width_c, int(prompt_real.sum() + completion_lengths.sum())


def token_budget_split(prompt_lengths: Tensor, completion_lengths: Tensor, groups: Tensor,
                       budget: int) -> list[Tensor]:
    """Micro-batches (positions into the given [n] rows) of at most `budget` computed positions
    each (`rl.micro_batch_tokens`; verl's dynamic batch size): the fewest passes, and among those
    the fewest computed positions (`computed_positions`: padding, and prompts computed once per
    micro-batch). A smaller budget gives more, narrower passes and less padding.

    Rows are ordered by completion length, longest first (a group's rows of one length
    together); the micro-batches are runs of that order, found by dynamic programming over the
    run ends: O(n^2) for n rows.
    A row over the budget on its own is a micro-batch.
    """
    order = sorted(range(len(groups)), key=lambda i: (-int(completion_lengths[i]), int(groups[i]), i))
    prompt = [int(prompt_lengths[i]) for i in order]
    width = [max(1, int(completion_lengths[i])) for i in order]
    group = [int(groups[i]) for i in order]
    best: list[tuple[int, int]] = [(0, 0)] + [(2**62, 0)] * len(order)  # (passes, positions)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        seen: set[int] = set()
        widest_prompt = 0
        for first in range(end - 1, -1, -1):  # the run order[first:end]; its longest completion is first
            seen.add(group[first])
            widest_prompt = max(widest_prompt, prompt[first])
            rows = end - first
            if len(seen) == rows:
                cost = rows * (widest_prompt + width[first])
            else:
                cost = len(seen) * widest_prompt + rows * width[first]
            if cost > budget and rows > 1:
                break
            total = (best[first][0] + 1, best[first][1] + cost)
            if total < best[end]:
                best[end], start[end] = total, first
    parts: list[Tensor] = []
    end = len(order)
    while end:
        parts.append(torch.tensor(order[start[end]:end]))
        end = start[end]
    return parts[::-1]
