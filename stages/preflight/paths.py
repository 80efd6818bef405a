"""Output and checkpoint paths: output_dir is a writable folder, nothing stands where a stage writes,
and a checkpoint path names a checkpoint (else the ones the user may have meant)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from pipeline.config import Config, ConfigError
from pipeline.core.models import ModelError, is_adapter
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
