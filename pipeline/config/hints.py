"""Error messages a user can act on: every valid key, and the key a TRL or verl user probably meant."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pipeline.config.algorithm import TYPED_KEYS, typed_setting_hint
from pipeline.config.schema import Config


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of `model`; a union of sections (`algorithm.policy_loss`) gives each member's keys."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for sub in _sections_of(field.annotation):
            keys.extend(_valid_keys(sub, f"{prefix}{name}."))
    return list(dict.fromkeys(keys))


def _sections_of(annotation: Any) -> list[type[BaseModel]]:
    """The section classes a field holds: itself, or the members of a (discriminated) union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, UnionType, Annotated):
        return [sub for arg in get_args(annotation) for sub in _sections_of(arg)]
    return []


STAGE_SECTIONS = ("rl", "sft", "reward_model", "dpo", "eval")
"""Sections that belong to one stage; `{stage}` in FOREIGN_NAMES stands for one of them."""

_OWN_BATCH = {"rl": "rl.micro_batch_size", "sft": "sft.micro_batch_size",
              "reward_model": "reward_model.batch_size", "dpo": "dpo.batch_size"}
_SAMPLING = {"eval": "eval.{leaf}", "*": "rollout.{leaf}"}

FOREIGN_NAMES: dict[str, str | dict[str, str]] = {
    # TRL (GRPOConfig, SFTConfig, DPOConfig, RewardConfig, peft) and verl names -> ours. A dict maps
    # the stage's section (or "*": any other) to the key; `{stage}` is the stage's own section.
    "num_generations": "rl.group_size", "rollout.n": "rl.group_size", "n": {"eval": "eval.n", "*": "rl.group_size"},
    "beta": {"dpo": "dpo.beta", "*": "algorithm.kl_coef"},
    "kl_coef": "algorithm.kl_coef", "kl_loss_coef": "algorithm.kl_coef", "init_kl_coef": "algorithm.kl_coef",
    "use_kl_loss": "algorithm.kl_coef", "kl_loss_type": "algorithm.kl_estimator", "kl_penalty": "algorithm.kl_estimator",
    "use_kl_in_reward": "algorithm.kl_in_reward", "entropy_coeff": "algorithm.entropy_coef",
    "learning_rate": "{stage}.lr", "lr": "{stage}.lr",
    "max_completion_length": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "max_response_length": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "response_length": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "max_new_tokens": {"eval": "eval.max_tokens", "*": "rollout.max_tokens"},
    "max_prompt_length": "data.max_prompt_tokens", "max_length": "{stage}.max_length",
    "max_seq_length": "{stage}.max_length",
    "epsilon": "algorithm.policy_loss.eps", "epsilon_low": "algorithm.policy_loss.eps_low",
    "epsilon_high": "algorithm.policy_loss.eps_high", "clip_ratio": "algorithm.policy_loss.eps",
    "cliprange": "algorithm.policy_loss.eps", "clip_ratio_low": "algorithm.policy_loss.eps_low",
    "clip_ratio_high": "algorithm.policy_loss.eps_high", "clip_ratio_c": "algorithm.policy_loss.dual_clip_c",
    "delta": "algorithm.policy_loss.dual_clip_c",
    # our own flat keys before the losses' typed settings (algorithm.eps_high -> algorithm.policy_loss.eps_high)
    **{f"algorithm.{key}": f"algorithm.policy_loss.{key}"
       for key in ("eps", "eps_low", "eps_high", "dual_clip_c", "tau_pos", "tau_neg")},
    # our own flat keys before the corrections' typed settings (algorithm.tis_cap -> algorithm.correction.cap)
    "algorithm.tis": "algorithm.correction", "algorithm.tis_cap": "algorithm.correction.cap",
    "algorithm.tis_lower": "algorithm.correction.lower", "algorithm.tis_upper": "algorithm.correction.upper",
    # TRL (vllm_importance_sampling_*), verl (rollout_correction.rollout_is/rs*, tis_imp_ratio_cap), ms-swift
    "vllm_importance_sampling_correction": "algorithm.correction",
    "vllm_importance_sampling_mode": "algorithm.correction",
    "vllm_importance_sampling_cap": "algorithm.correction.cap",
    "rollout_correction": "algorithm.correction", "rollout_is": "algorithm.correction",
    "rollout_rs": "algorithm.correction", "rollout_is_threshold": "algorithm.correction.cap",
    "rollout_rs_threshold": "algorithm.correction.upper",
    "rollout_rs_threshold_lower": "algorithm.correction.lower", "tis_imp_ratio_cap": "algorithm.correction.cap",
    "rollout_importance_sampling_mode": "algorithm.correction",
    "rollout_importance_sampling_threshold": "algorithm.correction.cap",
    "temperature": _SAMPLING, "top_p": _SAMPLING, "top_k": "rollout.top_k",
    "per_device_train_batch_size": _OWN_BATCH, "ppo_micro_batch_size": "rl.micro_batch_size",
    "ppo_micro_batch_size_per_gpu": "rl.micro_batch_size", "micro_batch_size": _OWN_BATCH,
    "gradient_accumulation_steps": {"rl": "rl.mini_batch_size", "*": "{stage}.batch_size"},
    "ppo_mini_batch_size": "rl.mini_batch_size",
    "use_dynamic_bsz": "rl.micro_batch_tokens", "ppo_max_token_len_per_gpu": "rl.micro_batch_tokens",
    "train_batch_size": {"rl": "rl.prompts_per_step", "*": "{stage}.batch_size"},
    "generation_batch_size": "rl.prompts_per_step",
    "batch_size": {"rl": "rl.prompts_per_step", "*": "{stage}.batch_size"},
    "num_train_epochs": {"rl": "rl.steps", "*": "{stage}.epochs"},
    "total_epochs": {"rl": "rl.steps", "*": "{stage}.epochs"},
    "epochs": {"rl": "rl.steps", "*": "{stage}.epochs"},
    "max_steps": "rl.steps", "total_training_steps": "rl.steps",
    "num_iterations": "rl.ppo_epochs", "ppo_epochs": "rl.ppo_epochs",
    # asynchronous RL's bound on rollout lag: prime-rl, AReaL, verl (fully async), NeMo-RL, OpenRLHF
    "async_level": "rl.max_staleness", "max_async_level": "rl.max_staleness",
    "max_head_offpolicyness": "rl.max_staleness", "staleness_threshold": "rl.max_staleness",
    "max_trajectory_age_steps": "rl.max_staleness", "async_train": "rl.max_staleness",
    "warmup_ratio": "{stage}.warmup_steps", "lr_warmup_steps": "{stage}.warmup_steps",
    "lr_scheduler_type": "{stage}.lr_schedule", "bf16": "{stage}.bf16_autocast",
    "grad_clip": "{stage}.max_grad_norm",
    "loss_type": "algorithm.loss_agg", "loss_agg_mode": "algorithm.loss_agg",
    "adv_estimator": "algorithm.advantage", "scale_rewards": "algorithm.advantage",
    "norm_adv_by_std_in_grpo": "algorithm.advantage",
    "mask_truncated_completions": "algorithm.overlong_filter", "overlong_filtering": "algorithm.overlong_filter",
    "reward_funcs": "reward.terms", "reward_weights": "reward.terms",
    "model_name_or_path": "model.name", "model_path": "model.name", "torch_dtype": "model.dtype",
    "lora_r": "lora.rank", "r": "lora.rank", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules", "use_peft": "lora.enabled",
    "use_vllm": "rollout.engine", "vllm_mode": "rollout.engine",
    "vllm_gpu_memory_utilization": "rollout.gpu_memory_utilization",
    "vllm_max_model_length": "rollout.max_model_len",
    "save_steps": "rl.save_every", "save_freq": "rl.save_every", "eval_steps": "rl.eval_every",
    "test_freq": "rl.eval_every", "seed": {"eval": "eval.seed", "*": "seed"},
    "dataset_name": {"eval": "eval.dataset", "*": "data.train"}, "train_files": "data.train",
    "val_files": "data.test", "eval_dataset": "data.test", "dataset_train_split": "data.split",
}


def _hints(key: str, valid: list[str], section: str | None, spelling: bool = True) -> list[str]:
    """Valid keys a user probably meant by the unknown `key`, for the stage whose own section is `section`.

    In order: a TRL/verl name (FOREIGN_NAMES), the same name under another section, a close spelling
    (unless `spelling` is False). The section the key was written under (`dpo.beta`) wins over the stage's.
    """
    parts = key.split(".")
    leaf, where = parts[-1], parts[0] if len(parts) > 1 and parts[0] in STAGE_SECTIONS else section
    entry = FOREIGN_NAMES.get(".".join(parts[-2:])) or FOREIGN_NAMES.get(leaf)
    if entry is not None:
        options = [entry] if isinstance(entry, str) else (
            [entry.get(where, entry.get("*", ""))] if where else list(entry.values()))
        found = []
        for option in options:
            stages = [where] if where and "{stage}" in option else STAGE_SECTIONS
            found += [option.format(stage=s, leaf=leaf) for s in stages]
        found = [k for k in dict.fromkeys(found) if k in valid]
        if found:
            return [_typed_form(k) for k in found]
    same_leaf = [k for k in valid if k.endswith("." + leaf) or k == leaf]
    if same_leaf:
        own = [k for k in same_leaf if k.split(".")[0] == where]
        return [_typed_form(k) for k in own or same_leaf]
    if not spelling:
        return []
    return [_typed_form(k) for k in difflib.get_close_matches(key, valid, n=1, cutoff=0.6)]


def _leaves(value: Any, prefix: str) -> list[str]:
    """The dotted paths of every leaf of a nested mapping (`actor_rollout_ref.rollout.n`)."""
    if not isinstance(value, dict) or not value:
        return [prefix]
    return [leaf for name, sub in value.items() for leaf in _leaves(sub, f"{prefix}.{name}")]


def _unknown(key: str, value: Any, valid: list[str], section: str | None) -> list[str]:
    """`unknown key ...` lines for `key`; a mapping value (a verl-style nested key such as
    `actor_rollout_ref.rollout.n`) is hinted by its full dotted paths when any of them names a valid key
    (`rollout.n` -> `rl.group_size`), unless `key` is a misspelt section (`rollotu` -> `rollout`)."""
    siblings = [k for k in valid if k.count(".") == key.count(".")]
    misspelt = bool(difflib.get_close_matches(key, siblings, n=1, cutoff=0.6))
    paths = {path: _hints(path, valid, section, spelling=False) for path in _leaves(value, key)}
    if not isinstance(value, dict) or misspelt or not any(paths.values()):
        paths = {key: _hints(key, valid, section)}
    return [f"unknown key {path!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "")
            for path, close in paths.items()]


def _typed_form(key: str) -> str:
    """A setting that only some policy-loss or correction types have, written with a type that has it
    (`algorithm.policy_loss.eps_high` -> `algorithm.policy_loss={type: dapo, eps_high: ...} (or type
    gspo, gspo_token)`): set alone it would meet the default type, which lacks it."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "algorithm" and parts[1] in TYPED_KEYS:
        return typed_setting_hint(parts[1], parts[2]) or key
    return key


def explain(error: ValidationError, section: str | None = None,
            source: Callable[[str], str] | None = None) -> str:
    """`error` in one line: each problem with its dotted key and a hint. `section` is the running stage's;
    `source(key)` names where the key was set (`configs/demo.yaml`, `override rl.lr=x`), put first; a
    cross-section error (no key of its own) is blamed on where the keys its message names were set."""
    lines = []
    valid = _valid_keys(Config)
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        keys = [key] if key else [k for k in re.findall(r"[a-z_]+(?:\.[a-z_]+)+", item["msg"]) if k in valid]
        origins = list(dict.fromkeys(source(k) for k in keys)) if source is not None else []
        origin = f"{' and '.join(o for o in origins if o)}: " if any(origins) else ""
        if item["type"] == "extra_forbidden":
            lines += [origin + line for line in _unknown(key, item.get("input"), valid, section)]
        else:
            where = f"{key}: " if key else ""
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{origin}{where}{message}{_got(item.get('input'))}{_close_choice(item)}")
    return "; ".join(lines)


_LISTED = re.compile(r"valid(?: \w+)?: ([\w\-]+(?:, [\w\-]+)*)")


def _close_choice(item: Any) -> str:
    """` (did you mean 'grpo'?)` after a bad value of a closed choice (a Literal, or a registry whose
    message lists the valid names: presets, policy losses, corrections) when one is spelt close to it."""
    value = item.get("input")
    value = value.get("type") if isinstance(value, dict) else value  # a typed setting's `type`
    if not isinstance(value, str):
        return ""
    if item["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(item.get("ctx", {}).get("expected", "")))
    else:
        listed = _LISTED.search(item["msg"])
        choices = listed.group(1).split(", ") if listed else []
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


GOT_MAX_CHARS = 60
"""A value longer than this is not repeated in an error message."""


def _got(value: Any) -> str:
    """` (got 3)` after a field's error; nothing for a section (a check across its keys, whose message
    names them) or a value too long to read in one line."""
    shown = repr(value)
    if isinstance(value, dict) or len(shown) > GOT_MAX_CHARS:
        return ""
    return f" (got {shown})"

