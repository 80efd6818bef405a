"""Small tensors and constants for the tests that check formulas against hand computations (losses,
policy losses, corrections, regularisers, log-probs, rewards entering training)."""

import math

import torch

NAN, INF = float("nan"), float("inf")
ln = math.log


def leaf(values) -> torch.Tensor:
    """`values` as a float32 tensor that records its gradient."""
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def full_mask(*shape: int) -> torch.Tensor:
    """An all-True bool mask of `shape` (every token counts)."""
    return torch.ones(*shape, dtype=torch.bool)
