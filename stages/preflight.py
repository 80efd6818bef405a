"""Every check that needs no model, run before a stage loads one (`run_stage`); `--dry-run` runs only these.

Each check raises ConfigError, DataError or ModelError with one line naming the key, file or line,
and returns lines for the dry run's summary. See docs/design.md.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import torch
from ray._private.services import get_ray_address_from_environment
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

import rewards
from pipeline.cluster.runtime import private_cpus
from pipeline.config import ClusterConfig, Config, ConfigError, RewardModelConfig, RewardTerm
from pipeline.data.problems import DataError, Problem, load_problems_for
from pipeline.eval.evaluation import load_eval_problems
from pipeline.core.models import DEFAULT_MODEL, ModelError, is_adapter, model_source, resolve_device
from pipeline.data.preference import load_pairs
from pipeline.rollout import resolve_engine, resolve_sync
from pipeline.supervised.sft import with_solutions
from stages.catalog import CHAIN, COMMANDS, STAGES

MAX_HINTS = 3


def check_output_dir(config: Config) -> list[str]:
    """`output_dir` (and every folder above it that exists) must be a writable folder, not a file."""
    path = Path(config.output_dir).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        inside = "" if existing == path else f" (output_dir is {path}, inside it)"
        raise ConfigError(f"output_dir: {existing} is a file, not a folder{inside}")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"output_dir: cannot write to {existing}")
    return [f"output_dir: {path}/ ({'exists' if path.is_dir() else 'will be created'})"]


def written_paths(stage: str) -> list[str]:
    """The paths under output_dir that `stage` (a catalog command) writes, from the catalog's `writes`
    and folders (a folder ends in `/`); templated ones (`checkpoint-<step>/`) left out."""
    info = COMMANDS[stage]
    folders = [f"{STAGES[name].folder}/" for name in (CHAIN if stage == "run" else (stage,))
               if STAGES[name].folder]
    tokens = [token.strip("(),") for entry in info.writes for token in entry.split()]
    return list(dict.fromkeys(folders + [t for t in tokens if "/" in t and "<" not in t] +
                              [t for t in tokens if t.endswith(".json") and "/" not in t]))


def check_output_paths(config: Config, stage: str) -> list[str]:
    """No file stands where `stage` writes a folder (`output_dir/rl` a file), nor a folder where it
    writes a file: ConfigError naming the path, instead of a FileExistsError once the stage runs."""
    root = Path(config.output_dir).expanduser()
    for written in written_paths(stage):
        path = root / written
        folders = [*reversed(path.parents[:len(path.parents) - len(root.parents) - 1])]
        for folder in folders + ([path] if written.endswith("/") else []):
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"output_dir: {folder} is a file, but `rlvr {stage}` writes the folder "
                                  f"{folder}/ there; move it away or choose another output_dir")
        if not written.endswith("/") and path.is_dir():
            raise ConfigError(f"output_dir: {path} is a folder, but `rlvr {stage}` writes a file there; move it "
                              "away or choose another output_dir")
    return []


def _checkpoints_in(folder: Path) -> list[Path]:
    """Trained checkpoints at most four levels below `folder`: LoRA adapter folders, and full model
    folders that a stage wrote (named `model`, not the reward model's)."""
    found = [p.parent for depth in range(1, 5) for p in folder.glob("*/" * depth + "adapter_config.json")]
    found += [p.parent for depth in range(2, 5) for p in folder.glob("*/" * (depth - 1) + "model/config.json")
              if STAGES["reward-model"].folder not in p.relative_to(folder).parts]
    return sorted(set(found))


def _run_folder(path: Path) -> Path | None:
    """The output_dir holding `path`: its nearest existing ancestor with a stage's folder in it."""
    folders = [stage.folder for stage in STAGES.values() if stage.folder]
    for ancestor in [path, *path.parents][:-1]:  # never the filesystem root
        if ancestor.is_dir() and any((ancestor / name).is_dir() for name in folders):
            return ancestor
    return None


def _candidates(path: Path) -> list[str]:
    """Checkpoints the user may have meant by `path`: those inside it (an existing folder), else those of
    the run folder (output_dir) holding it, closest name first; none outside a run folder."""
    full = path.resolve()
    inside = _checkpoints_in(full) if full.is_dir() else []
    run = _run_folder(full.parent if full.is_dir() else full)
    found = inside or (_checkpoints_in(run) if run is not None else [])
    ranked = sorted(found, key=lambda p: -difflib.SequenceMatcher(None, str(p), str(full)).ratio())
    return [str(p if path.is_absolute() or not p.is_relative_to(Path.cwd()) else p.relative_to(Path.cwd()))
            for p in ranked[:MAX_HINTS]]


def check_checkpoint(folder: str, key: str, *, adapter_only: bool = False) -> str:
    """What `folder` is ("LoRA adapter" or "model folder"); ModelError naming `key` when it is neither.

    The error lists the checkpoints inside the folder, or in the run folder (output_dir) holding it.
    """
    path = Path(folder).expanduser()
    if path.is_dir() and is_adapter(path):
        return "LoRA adapter"
    if path.is_dir() and not adapter_only and (path / "config.json").is_file():
        return "model folder"
    if path.exists() and not path.is_dir():
        problem = f"{folder} is a file, not a checkpoint folder"
    elif not path.exists():
        problem = f"checkpoint folder not found: {folder}"
    elif adapter_only and (path / "config.json").is_file():
        raise ModelError(f"{key}: {folder} is a full model folder, not a LoRA adapter (no adapter_config.json); "
                         f"start from it with model.name={folder}")
    else:
        needs = "adapter_config.json" if adapter_only else "adapter_config.json or config.json"
        problem = f"{folder} is not a checkpoint folder (no {needs})"
    found = _candidates(path)
    hint = f" (found: {', '.join(found)})" if found else ""
    raise ModelError(f"{key}: {problem}{hint}")


HUB_TIMEOUT_S = 5.0
"""How long the hub may take to answer before a hub model counts as unreachable."""


def _is_local_name(name: str) -> bool:
    """A model name that names a local path (as `data.train` does, pipeline/data/problems.py `is_local`):
    it starts with `.`, `/` or `~`, or its first path component exists here (`models/nope`)."""
    first = name.split("/")[0]
    return name.startswith((".", "/", "~")) or (first != "" and Path(first).expanduser().exists())


def _model_folder(config: Config) -> Path | None:
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
    where = "" if kind != "hub" else ", cached" if _model_folder(config) else f", {check_hub_model(config.model.name)}"
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
    folder = _model_folder(config)
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


def _keyed(key: str, load: Callable[[], list]) -> list:
    """`load()`, its DataError prefixed with the config key that named the data."""
    try:
        return load()
    except DataError as exc:
        raise DataError(f"{key}: {exc}") from None


def _problems(config: Config, which: str, levels: list[int] | None = None) -> tuple[list[Problem], str]:
    """The `which` ("train"/"test") problems, filtered by `levels` (a stage's, e.g. rl.levels) when set,
    else data.levels; a DataError names data.{which} and, where they matter, the keys behind it."""
    data = config.data if levels is None else config.data.model_copy(update={"levels": levels})
    key = f"data.{which}"
    try:
        problems = load_problems_for(data, which, seed=config.seed)  # type: ignore[arg-type]
    except DataError as exc:
        raise DataError(f"{key}: {exc}{_data_hint(config, which, levels, str(exc))}") from None
    return problems, f"{key}: {getattr(data, which)}: {len(problems)} problems"


def _data_hint(config: Config, which: str, levels: list[int] | None, message: str) -> str:
    """The config keys behind a data error that its loader cannot name: the filter's (`rl.levels` set by
    the recipe wins over `data.levels`), or data.columns/data.preset, which apply to data.test too."""
    data = config.data
    if "after filtering" in message:
        keys = [f"rl.levels={levels}" if levels is not None else f"data.levels={data.levels}" if data.levels else "",
                f"data.sources={data.sources}" if data.sources else ""]
        return f"; the filter is {' and '.join(k for k in keys if k)}: widen or unset it"
    if which == "test" and (data.columns or data.preset != "auto"):
        mapping = " and ".join(k for k, v in (("data.columns", data.columns), ("data.preset", data.preset != "auto")) if v)
        return (f"; {mapping} apply to data.test too: set data.test to a held-out file in the same layout as "
                f"data.train ({data.train})")
    return ""


def check_sft_data(config: Config) -> list[str]:
    """SFT's problems load and at least two have a worked solution (one is held out)."""
    problems, line = _problems(config, "train")
    solved = with_solutions(problems, config.sft.max_examples, config.seed)
    if len(solved) < 2:
        raise DataError(
            f"data.train: {config.data.train}: {len(solved)} of {len(problems)} problems have a worked solution; "
            f"SFT trains on the `solution` column and needs at least 2 (map yours with data.columns.solution=COLUMN)")
    return [f"{line}, {len(solved)} used for SFT (with a worked solution)"]


def check_preference_data(config: Config, section: RewardModelConfig, key: str) -> list[str]:
    """The pairs file `section.pairs` when set, else the training problems pairs are sampled from."""
    if section.pairs:
        pairs = _keyed(f"{key}.pairs", lambda: load_pairs(section.pairs))
        return [f"{key}.pairs: {section.pairs}: {len(pairs)} pairs"]
    return [_problems(config, "train")[1], f"{key}.pairs: not set: sampled from {section.num_problems} training problems"]


def check_rl_data(config: Config) -> list[str]:
    """RL's training and held-out problems load (with `rl.levels` when set)."""
    return [_problems(config, which, config.rl.levels)[1] for which in ("train", "test")]


def check_eval_data(config: Config) -> list[str]:
    cfg = config.eval
    problems = _keyed("eval.dataset", lambda: load_eval_problems(cfg.dataset, split=cfg.split, levels=cfg.levels,
                                                                 limit=cfg.problems, seed=cfg.seed))
    return [f"eval.dataset: {cfg.dataset}: {len(problems)} problems"]


STAGE_CHECKS: dict[str, Callable[[Config], list[str]]] = {
    "sft": check_sft_data,
    "reward-model": lambda c: check_preference_data(c, c.reward_model, "reward_model"),
    "dpo": lambda c: check_preference_data(c, c.dpo, "dpo"),
    "rl": check_rl_data,
    "eval": check_eval_data,
}
"""The data each stage reads. `rlvr run` runs those of every stage in CHAIN."""


RL_COLUMNS = ("prompts", "prompt", "completion_ids", "problem", "answer", "solution", "lengths", "truncated",
              "trainer_state", "step")
"""The columns RL hands every reward besides the data's own (pipeline/rl/trainer.py `Trainer._score`)."""


def _built_by_the_chain(config: Config, term: RewardTerm, stage: str) -> bool:
    """A `reward_model` term reading the reward model `rlvr run` trains first (not there before the run)."""
    folder = Path(config.output_dir) / STAGES["reward-model"].folder
    path = term.params.get("path")
    return (stage == "run" and term.name == "reward_model" and isinstance(path, str)
            and folder.resolve() in (Path(path).resolve(), *Path(path).resolve().parents))


def check_rewards(config: Config, stage: str) -> list[str]:
    """`reward.terms`: every name resolves (registered, `module:fn` or `file.py:fn`), takes its params and
    builds with their values (the factories check them: `extract: boxd`, the code sandbox), as RL builds
    them; for RL, the data has every column a reward requires (the code reward's `tests`)."""
    line = f"reward.terms: {', '.join(term.name for term in config.reward.terms)}"
    terms = [term for term in config.reward.terms if not _built_by_the_chain(config, term, stage)]
    try:
        rewards.check_terms(config.reward.terms)
        scorer = rewards.RewardScorer(terms, workers=config.reward.workers, timeout=config.reward.timeout,
                                      max_tokens=config.rollout.max_tokens) if terms else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if scorer is None:
        return [line]
    with scorer:
        if stage in ("rl", "run"):
            problems = _problems(config, "train", config.rl.levels)[0]
            try:
                scorer.check_columns({*RL_COLUMNS, *(key for p in problems for key in p.extra)})
            except ValueError as exc:
                raise DataError(f"data.train: {config.data.train}: {exc}") from None
    return [line]


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


def _asked(cluster: ClusterConfig, resource: str) -> float:
    """The CPUs or GPUs (`resource`) the rollout workers and learner ranks ask of Ray in all."""
    return (cluster.rollout_workers * getattr(cluster, f"{resource}_per_rollout_worker")
            + cluster.learner_workers * getattr(cluster, f"{resource}_per_learner_worker"))


def check_cluster(config: Config) -> list[str]:
    """What Ray will be asked for, checked without starting it. A private Ray (no address, `local`):
    the GPUs asked for exist here (torch.cuda.device_count()) and no worker asks for more CPUs than the
    machine has (more in all only oversubscribes: pipeline/cluster/runtime.py `private_cpus`); `auto`: a
    Ray started here by `ray start` (or RAY_ADDRESS). A remote address is left to the connect.
    ConfigError naming the keys otherwise."""
    if not config.uses_ray:
        return []
    cluster = config.cluster
    if cluster.address == "auto":
        try:
            found = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise ConfigError("cluster.address=auto: no running Ray found on this machine (nor RAY_ADDRESS); "
                              "start one with `ray start --head`, or use cluster.address=local for a private "
                              "Ray") from None
        return [f"cluster.address: auto ({found})"]
    if cluster.address not in (None, "local"):
        return [f"cluster.address: {cluster.address} (checked when the run connects)"]
    gpus, have_gpus = _asked(cluster, "gpus"), torch.cuda.device_count()
    if gpus > have_gpus:
        raise ConfigError(f"cluster: the workers ask for {gpus:g} GPUs (rollout_workers x gpus_per_rollout_worker + "
                          f"learner_workers x gpus_per_learner_worker) but this machine has {have_gpus}; "
                          "lower them, or join a cluster that has them with cluster.address")
    cores = os.cpu_count() or 1
    for role in ("rollout", "learner"):
        cpus = getattr(cluster, f"cpus_per_{role}_worker")
        if cpus > cores:
            raise ConfigError(f"cluster.cpus_per_{role}_worker={cpus:g} is more than the {cores} CPUs of this "
                              "machine, where a private Ray runs; lower it, or join a larger cluster with "
                              "cluster.address")
    return [f"cluster: private Ray, {private_cpus(cluster)} CPUs for {_asked(cluster, 'cpus'):g} asked, "
            f"{gpus:g} of {have_gpus} GPUs"]


def preflight(config: Config, stage: str) -> list[str]:
    """Run every model-free check of `stage` (a catalog command); the dry run's summary lines.

    Raises ConfigError, DataError or ModelError (one line) at the first problem found.
    """
    stages = CHAIN if stage == "run" else (stage,)
    lines = check_output_dir(config) + check_output_paths(config, stage)
    if "model" in COMMANDS[stage].sections:
        lines += check_model(config) + check_context(config, stage)
    if "reward" in COMMANDS[stage].sections:
        lines += check_rewards(config, stage)
    if stage in ("rl", "run"):
        lines += check_engine(config) + check_cluster(config)
    for name in stages:
        if name in STAGE_CHECKS:
            lines += STAGE_CHECKS[name](config)
    return list(dict.fromkeys(lines))
