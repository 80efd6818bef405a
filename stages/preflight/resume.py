"""`--resume`: the checkpoint a resumed stage continues from is complete and fits the config, checked
before the model loads (a checkpoint of another LoRA rank would otherwise fail in `load_state_dict`
after Ray and the model started)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from pipeline.config import Config, ConfigError
from pipeline.core.checkpoint import STATE_FILE, latest_checkpoint
from pipeline.core.models import is_adapter
from stages.catalog import STAGES
from stages.preflight.model import local_model_folder

log = logging.getLogger(__name__)

ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "vocab_size")
"""The config.json entries that decide the shapes of a model's weights."""


def check_resume(config: Config, stage: str) -> list[str]:
    """The checkpoint `--resume` continues `stage` (a resumable catalog stage) from, as a summary line.

    No checkpoint and none ever written: the stage starts at step 0 (a job script may always pass
    --resume), with a warning when an earlier run left records that it replaces. A `latest` that
    names no complete checkpoint, or complete checkpoints without `latest`: ConfigError. A checkpoint
    that does not fit the config (`check_fits`): ConfigError naming the key.
    """
    folder = Path(config.output_dir) / STAGES[stage].folder
    pointer = folder / "latest"
    checkpoint = latest_checkpoint(folder)
    complete = sorted(p.name for p in folder.glob("checkpoint-*") if (p / STATE_FILE).is_file())
    if checkpoint is None and (pointer.is_file() or complete):
        named = f"{pointer} names {pointer.read_text().strip()!r}, not a complete checkpoint (no {STATE_FILE})" \
            if pointer.is_file() else f"{folder} has no `latest` file naming its checkpoint"
        choice = f"; complete ones: {', '.join(complete)} (write one's name into {pointer})" if complete else ""
        raise ConfigError(f"--resume: {named}{choice}; or pass --overwrite to start over")
    if checkpoint is None:
        held = sorted(p.name for p in folder.iterdir() if p.name != "config.yaml") if folder.is_dir() else []
        if not held:
            return [f"--resume: nothing to resume in {folder}: starts at step 0"]
        warning = (f"--resume: {folder} holds no checkpoint: starts at step 0 and replaces the earlier "
                   f"run's records ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''})")
        log.warning(warning)
        return [f"warning: {warning}"]
    check_fits(config, checkpoint)
    return [f"--resume: from {checkpoint}"]


def check_fits(config: Config, checkpoint: Path) -> None:
    """The weights in `checkpoint/adapter` load into the model `config` builds: LoRA or full weights
    as `lora.enabled` says, the same LoRA rank, target modules and alpha, a base model of the same
    architecture (ARCHITECTURE_KEYS). ConfigError naming the key that differs."""
    weights = checkpoint / "adapter"
    lora = config.lora.enabled or config.model.adapter is not None
    if is_adapter(weights) != lora:
        saved = "a LoRA adapter" if is_adapter(weights) else "full model weights (no LoRA)"
        raise ConfigError(f"--resume: {checkpoint} holds {saved}, but lora.enabled={str(config.lora.enabled).lower()}; "
                          "resume with the setting it was trained with, or pass --overwrite to start over")
    base = weights
    if lora:
        saved = json.loads((weights / "adapter_config.json").read_text())
        key, rank = ("model.adapter", _rank(Path(config.model.adapter))) if config.model.adapter is not None \
            else ("lora.rank", config.lora.rank)
        if saved.get("r") != rank:
            raise ConfigError(f"--resume: {checkpoint} holds a LoRA adapter of rank {saved.get('r')}, but {key} "
                              f"gives rank {rank}; resume with the rank it was trained with, or pass --overwrite")
        base = Path(saved.get("base_model_name_or_path") or "")
        if config.model.adapter is None:
            _check_targets(config, checkpoint, saved.get("target_modules") or [])
            if saved.get("lora_alpha", config.lora.alpha) != config.lora.alpha:  # the scale alpha / rank
                raise ConfigError(f"--resume: {checkpoint} holds a LoRA adapter with alpha {saved['lora_alpha']}, "
                                  f"but lora.alpha={config.lora.alpha} would rescale its update (alpha / rank); "
                                  "resume with the alpha it was trained with, or pass --overwrite")
    _check_architecture(config, checkpoint, base / "config.json")


def _rank(adapter: Path) -> int | None:
    return json.loads((adapter / "adapter_config.json").read_text()).get("r")


def _check_architecture(config: Config, checkpoint: Path, saved: Path) -> None:
    model = local_model_folder(config)
    if model is None or not saved.is_file():
        return  # the model is not on disk yet (to download or convert), or the base model moved
    ours, theirs = json.loads((model / "config.json").read_text()), json.loads(saved.read_text())
    differ = [k for k in ARCHITECTURE_KEYS if ours.get(k) != theirs.get(k)]
    if differ:
        shown = ", ".join(f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in differ)
        raise ConfigError(f"--resume: {checkpoint} was trained on {saved.parent}, whose architecture differs from "
                          f"model.name={config.model.name} ({shown}); resume with the model it was trained on, "
                          "or pass --overwrite")


def _check_targets(config: Config, checkpoint: Path, saved: list[str] | str) -> None:
    """The modules the checkpoint's adapter wraps (by their last name: `q_proj`) are those
    `lora.target_modules` selects; `all-linear` is read from the model's linear layers (built on
    the meta device: no weights load). Patterns other than plain names are left to peft."""
    targets = config.lora.target_modules
    if isinstance(saved, str) or (isinstance(targets, list) and not all(re.fullmatch(r"\w+", t) for t in targets)):
        return
    have = {name.rsplit(".", 1)[-1] for name in saved}
    if targets == "all-linear":
        model = local_model_folder(config)
        if model is None:
            return
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
        want = {name.rsplit(".", 1)[-1] for name, module in skeleton.named_modules()
                if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head"}
    else:
        want = set(targets)
    if have != want:
        raise ConfigError(f"--resume: {checkpoint} holds LoRA on {sorted(have)}, but lora.target_modules="
                          f"{targets} selects {sorted(want)}; resume with the modules it was trained with, or "
                          "pass --overwrite")
