"""`rlvr export`: merge a LoRA adapter into its base model: a standalone folder transformers and vLLM load.

    rlvr export configs/demo.yaml                       # rl/final/adapter -> runs/demo/export/model/
    rlvr export configs/demo.yaml --checkpoint runs/demo/sft/adapter --overwrite
    vllm serve runs/demo/export/model

The merged weights are `W + scaling * B @ A` (peft's `merge_and_unload`), computed in float32 and
saved in `--dtype` (default: the base model's), with the tokenizer and generation config. A full
model folder (full fine-tuning) is written the same way. `export/source.json` names the inputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from pipeline.core.checkpoint import FINAL, write_folder_atomic, write_json_atomic
from pipeline.config import Config, ConfigError
from pipeline.core.models import is_adapter, load_checkpoint, prepare_model
from stages.common import run_stage, stage_dir, stage_parser
from stages.preflight import check_checkpoint

DTYPES = ("auto", "float32", "bfloat16", "float16")


def default_checkpoint(config: Config) -> Path:
    """`<output_dir>/rl/final/adapter` (or `.../model` after full fine-tuning); ConfigError if neither exists."""
    final = Path(config.output_dir) / "rl" / FINAL
    for name in ("adapter", "model"):
        if (final / name).is_dir():
            return final / name
    raise ConfigError(f"no trained weights in {final}/: run `rlvr rl` first, or pass --checkpoint FOLDER")


def checkpoint_of(config: Config, args: argparse.Namespace) -> Path:
    """`--checkpoint` when it is an adapter or model folder (ModelError naming it otherwise), else
    `default_checkpoint`; run in the preflight, before any model loads."""
    if args.checkpoint is None:
        return default_checkpoint(config)
    check_checkpoint(args.checkpoint, "--checkpoint")
    return Path(args.checkpoint)


def base_model(config: Config, checkpoint: Path) -> Path:
    """The model the checkpoint started from: an adapter's recorded `base_model_name_or_path` when
    that is a local folder, else `model.name` (prepared). For a full model folder it only supplies
    the default dtype and, if the folder holds none, the tokenizer."""
    if is_adapter(checkpoint):
        recorded = json.loads((checkpoint / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
    return prepare_model(config.model.name, config.model.cache_dir)


def export_model(checkpoint: str | Path, base: str | Path, out: str | Path, dtype: str = "auto") -> Path:
    """Write `out` atomically: `checkpoint` (an adapter merged into `base`, or a full model folder)
    as a standalone Hugging Face model folder in `dtype` (`auto`: `base`'s), with the tokenizer
    (the checkpoint's own if it holds one, else the base's). Returns `out`."""
    from transformers import AutoConfig, AutoTokenizer

    checkpoint, base = Path(checkpoint), Path(base)
    model = load_checkpoint(base, checkpoint)
    if is_adapter(checkpoint):
        model = model.merge_and_unload()
    if dtype == "auto":
        model = model.to(AutoConfig.from_pretrained(base).dtype or torch.float32)
    else:
        model = model.to(getattr(torch, dtype))
    model.config.use_cache = True  # training turned it off; inference wants it
    tokenizer = AutoTokenizer.from_pretrained(
        checkpoint if (checkpoint / "tokenizer_config.json").is_file() else base)

    def fill(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_folder_atomic(out, fill)


def main_with(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    checkpoint = checkpoint_of(config, args)
    base = base_model(config, checkpoint)
    folder = stage_dir(config, "export")
    out = export_model(checkpoint, base, folder / "model", args.dtype)
    source = {"output": str(out.resolve()), "checkpoint": str(checkpoint.resolve()),
              "base_model": str(base.resolve()), "merged": is_adapter(checkpoint), "dtype": args.dtype}
    write_json_atomic(folder / "source.json", source)
    print(f"export: {checkpoint} -> {out} (load it with transformers, or `vllm serve {out}`)")
    return source


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("export", __doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="an adapter or model folder (default: <output_dir>/rl/final/adapter)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="the saved weights' dtype (default auto: the base model's)")
    return parser


def main(argv: list[str] | None = None) -> None:
    run_stage(main_with, build_parser(), argv, checks=[lambda config, args: [f"checkpoint: {checkpoint_of(config, args)}"]])


if __name__ == "__main__":
    main()
