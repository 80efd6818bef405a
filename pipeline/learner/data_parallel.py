"""Data-parallel learning over torch.distributed (docs/design.md, "Scaling out").

W learner ranks hold the same weights, the whole rollout batch and the same shuffle order. Each
computes its share of whole groups of every mini-batch (`shard_groups`) with the §4 normalisers of
the whole mini-batch (docs/algorithms.md §4), so the summed gradients (`all_reduce_gradients`) are
the one-process gradient and every rank takes the one-process optimiser step. The process group
(gloo on CPU, NCCL on GPU) is created by the caller (pipeline/cluster/learner_group.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class LearnerRankError(RuntimeError):
    """A learner rank died or failed in a collective: the update needs every rank, so the run stops
    (and continues from its last checkpoint with `--resume`)."""


def shard_groups(rows: Tensor, group_size: int, rank: int, world_size: int) -> Tensor:
    """Rank `rank`'s contiguous share of the whole groups in `rows` ([n] row indices, group after
    group): group counts differ by at most one between ranks, and a rank may get none.
    One rank (`world_size` 1) gets every row, whole groups or not.

    Raises ValueError when `rows` (with several ranks) does not hold whole groups.
    """
    if world_size == 1:
        return rows
    if len(rows) % group_size:
        raise ValueError(f"{len(rows)} rows do not form whole groups of {group_size}")
    groups = rows.view(-1, group_size)
    start, stop = (len(groups) * r // world_size for r in (rank, rank + 1))
    return groups[start:stop].flatten()


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum each parameter's `.grad` over the ranks in place (one flat all-reduce per dtype). A
    parameter without a gradient (a rank that computed no rows) contributes zeros and receives
    the sum: every rank must call this, whatever it computed."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for dtype in {p.grad.dtype for p in params}:
        grads = [p.grad for p in params if p.grad.dtype == dtype]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(part.view_as(grad))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
