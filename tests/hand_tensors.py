"""Small tensors for the tests that check losses against hand computations (test_losses.py,
test_policy_losses.py, test_correction.py)."""

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
