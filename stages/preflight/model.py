"""The model and the rollout engine: model.name resolves without a download, every length fits the
model's context, and the engine and its weight sync accept the LoRA rank."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from pipeline.config import Config, ConfigError
from pipeline.core.models import DEFAULT_MODEL, ModelError, model_source, resolve_device
from pipeline.rollout import resolve_engine, resolve_sync
from stages.catalog import CHAIN
from stages.preflight.paths import MAX_HINTS, check_checkpoint

HUB_TIMEOUT_S = 5.0
"""How long the hub may take to answer before a hub model counts as unreachable."""


def _is_local_name(name: str) -> bool:
    """A model name that names a local path (as `data.train` does, pipeline/data/readers.py `is_local`):
    it starts with `.`, `/` or `~`, or its first path component exists here (`models/nope`)."""
    first = name.split("/")[0]
    return name.startswith((".", "/", "~")) or (first != "" and Path(first).expanduser().exists())


def local_model_folder(config: Config) -> Path | None:
    """The local folder holding the model's config.json without downloading or converting anything: the
    folder itself, the converted or downloaded copy under model.cache_dir, or the Hugging Face cache."""
    kind, path = model_source(config.model.name)
    cache = Path(config.model.cache_dir)
    candidates = {"folder": [path], "gguf": [cache / (DEFAULT_MODEL if config.model.name == DEFAULT_MODEL else path.stem)],
                  "hub": [cache / config.model.name.replace("/", "--")]}[kind]
    found = next((folder for folder in candidates if (folder / "config.json").is_file()), None)
    if found is None and kind == "hub":
        cached = huggingface_hub.try_to_load_from_cache(config.model.name, "config.json")
        found = Path(cached).parent if isinstance(cached, str) else None
    return found


def check_hub_model(name: str) -> str:
    """A hub model id that is neither cached nor reachable: ModelError within HUB_TIMEOUT_S naming
    model.name (offline, or the hub unreachable, or no such model); else how it will be fetched."""
    if huggingface_hub.is_offline_mode():
        raise ModelError(f"model.name: {name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                         "download it where the hub is reachable, or point model.name at a local folder")
    try:
        huggingface_hub.HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise ModelError(f"model.name: {name!r} is neither a local folder nor a model on the Hugging Face hub") from None
    except HfHubHTTPError:
        return "on the hub"  # reachable (gated, rate-limited, ...): the download's own error says more
    except Exception as exc:  # noqa: BLE001 - any network failure (DNS, refused, timeout) means unreachable
        raise ModelError(
            f"model.name: cannot reach the Hugging Face hub for {name!r} within {HUB_TIMEOUT_S:.0f} s "
            f"({type(exc).__name__}); download it where the hub is reachable and point model.name at the folder"
        ) from None
    return "on the hub"


def check_model(config: Config) -> list[str]:
    """`model.name` resolves without downloading or converting: a local name (`models/x`) must exist, a
    hub id must be cached or reachable; `model.adapter` is a LoRA adapter folder."""
    path = Path(config.model.name).expanduser()
    if _is_local_name(config.model.name) and not path.exists() and path.suffix != ".gguf":
        siblings = [p.name for p in path.parent.iterdir() if (p / "config.json").is_file()] if path.parent.is_dir() else []
        near = [str(path.parent / n) for n in difflib.get_close_matches(path.name, siblings, n=MAX_HINTS)]
        hint = f" (found: {', '.join(near or [str(path.parent / n) for n in sorted(siblings)[:MAX_HINTS]])})" \
            if siblings else ""
        raise ModelError(f"model.name: model folder not found: {config.model.name}{hint}")
    kind, path = model_source(config.model.name)
    where = "" if kind != "hub" else ", cached" if local_model_folder(config) else f", {check_hub_model(config.model.name)}"
    lines = [f"model.name: {config.model.name} ({kind}: {path}{where})"]
    if config.model.adapter is not None:
        what = check_checkpoint(config.model.adapter, "model.adapter", adapter_only=True)
        lines.append(f"model.adapter: {config.model.adapter} ({what})")
    return lines


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""Names config.json gives the model's context length (Llama/Qwen, GPT-2, others)."""


def _lengths(config: Config, stage: str) -> dict[str, int]:
    """The token lengths `stage` (a catalog stage) asks of the model, by the key that sets them. The
    engine's context, rollout.max_model_len, already bounds prompt plus completion (Config's check)."""
    return {"rl": {"rollout.max_model_len": config.rollout.max_model_len},
            "eval": {"rollout.max_model_len": config.rollout.max_model_len},
            "sft": {"sft.max_length": config.sft.max_length},
            "reward-model": {"reward_model.max_length": config.reward_model.max_length},
            "dpo": {"dpo.max_length": config.dpo.max_length}}.get(stage, {})


def check_context(config: Config, stage: str) -> list[str]:
    """Every length `stage` asks for fits the model's context (`max_position_embeddings` in its
    config.json, read without loading the model); ConfigError naming the key otherwise. Skipped when
    the model's config.json is not on disk yet (a GGUF file not yet converted, a hub model to download)."""
    folder = local_model_folder(config)
    if folder is None:
        return []
    settings = json.loads((folder / "config.json").read_text())
    context = next((settings[key] for key in CONTEXT_KEYS if isinstance(settings.get(key), int)), None)
    if context is None:
        return []
    for name in CHAIN if stage == "run" else (stage,):
        for key, length in _lengths(config, name).items():
            if length > context:
                raise ConfigError(f"{key} = {length} exceeds the model's context of {context} tokens "
                                  f"(max_position_embeddings in {folder / 'config.json'}); lower it to at most {context}")
    return [f"model context: {context} tokens"]


def engine_and_sync(config: Config) -> tuple[str, str | None]:
    """The rollout engine (`vllm`/`hf`) and, for vLLM, the weight sync (`adapter`/`merged`), resolved for
    the device as the engine will resolve them; EngineUnavailable when vLLM is asked for but missing."""
    engine = resolve_engine(config.rollout.engine)
    return engine, resolve_sync(config.rollout.sync, resolve_device(config.device)) if engine == "vllm" else None


def check_adapter_rank(config: Config, folder: str, key: str) -> None:
    """A LoRA adapter folder vLLM will serve with adapter sync has a rank within rollout.max_lora_rank;
    ConfigError naming `key` and the limit otherwise."""
    settings = Path(folder) / "adapter_config.json"
    if engine_and_sync(config)[1] != "adapter" or not settings.is_file():
        return
    rank = json.loads(settings.read_text()).get("r")
    if isinstance(rank, int) and rank > config.rollout.max_lora_rank:
        raise ConfigError(f"{key}: {folder} is a LoRA adapter of rank {rank}, above rollout.max_lora_rank="
                          f"{config.rollout.max_lora_rank}, the largest rank vLLM accepts with adapter sync "
                          f"(rollout.sync={config.rollout.sync}); raise rollout.max_lora_rank to at least {rank}")


def check_engine(config: Config) -> list[str]:
    """RL's rollout engine resolves (vLLM installed when asked for, else EngineUnavailable) and, pushing
    LoRA adapters (`rollout.sync`; `auto` resolved for the device, as the engine will), accepts lora.rank
    and the rank of `model.adapter`, the adapter RL starts from."""
    engine, sync = engine_and_sync(config)
    if sync is None:
        return [f"rollout.engine: {config.rollout.engine} ({engine})"]
    device = resolve_device(config.device).type
    try:
        config.check_lora_rank(sync)
    except ValueError as exc:
        raise ConfigError(f"{exc} (rollout.sync={config.rollout.sync}: {sync} on {device})") from None
    if config.model.adapter is not None:
        check_adapter_rank(config, config.model.adapter, "model.adapter")
    return [f"rollout.engine: {config.rollout.engine} ({engine}, {sync} sync on {device})"]
