"""Optimiser, learning-rate schedule, mixed precision and evaluation mode, shared by every training stage."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch

from pipeline.config import OptimConfig
from pipeline.core.models import bf16_is_native


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (fused/foreach kernels where the device has them)."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters: is the LoRA adapter loaded as trainable?")
    return torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999))


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Linear warm-up to 1, then constant or cosine decay to 0 at `total_steps`."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, config.warmup_steps, total_steps, config.lr_schedule),
    )


def uses_bf16_autocast(device: torch.device, enabled: bool | str) -> bool:
    """Whether a `bf16_autocast` setting turns autocast on: `"auto"` means where bf16 is native."""
    return bf16_is_native(device) if enabled == "auto" else bool(enabled)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool | str, model: torch.nn.Module | None = None) -> Iterator[None]:
    """bf16 autocast for forward/backward (`uses_bf16_autocast` decides). Weights stay fp32.
    With `model`: its layers' inputs cast once, not at every linear layer (`bf16_layer_inputs`)."""
    if not uses_bf16_autocast(device, enabled):
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16), \
            (contextlib.nullcontext() if model is None else bf16_layer_inputs(model)):
        yield


@contextlib.contextmanager
def bf16_layer_inputs(model: torch.nn.Module) -> Iterator[None]:
    """Under bf16 autocast: every norm inside the model's layers hands its output on in bf16, and
    peft's LoRA layers take their input as it comes (`peft.helpers.disable_input_dtype_casting`;
    peft would cast it to the adapter's float32 for autocast to cast back).

    Autocast casts each linear layer's input by itself: a Llama block's attention norm output is
    cast for q, k and v and again for each one's LoRA product, six casts of one tensor, and six
    gradients cast back in backward. Cast at the norm, it is cast once. The forward values are
    the same (the same rounding of the same tensor; with LoRA dropout, the dropout's 1 / (1 - p)
    scaling is then rounded in bf16 too); in backward the projections' gradients to it add up in
    bf16 before the one cast back to float32 (docs/design.md, "Mixed precision").
    Norms outside the layer stack (the final norm, whose float32 output the LM head and a value
    head read) are left alone.
    """
    from peft.helpers import disable_input_dtype_casting

    hooks = [module.register_forward_hook(_output_to_bf16) for name, module in model.named_modules()
             if type(module).__name__.endswith("Norm") and any(part.isdigit() for part in name.split("."))]
    try:
        with disable_input_dtype_casting(model):
            yield
    finally:
        for hook in hooks:
            hook.remove()


def _output_to_bf16(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.to(torch.bfloat16)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model.eval()` without gradients inside the block; the model's previous train/eval mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def clip_and_step(model_params: list[torch.nn.Parameter], optimizer, scheduler, max_grad_norm: float) -> float:
    """Clip the global gradient norm, step optimiser and schedule, zero grads; returns the norm."""
    norm = torch.nn.utils.clip_grad_norm_(model_params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
