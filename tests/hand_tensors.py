"""Small tensors and constants for the tests that check formulas against hand computations (losses,
policy losses, corrections, regularisers, log-probs, rewards entering training), and the gradients
that the forward-equality tests compare."""

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


def parameter_grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """Backward of `loss` from zeroed gradients: each parameter's gradient by name (those it reaches)."""
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
