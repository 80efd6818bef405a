"""`rlvr eval`: AIME-style evaluation (avg@n, pass@k, maj@k; docs/algorithms.md §11) of the base model or adapters.

    rlvr eval configs/demo.yaml eval.n=8 --adapter runs/demo/rl/final/adapter
    rlvr eval configs/demo.yaml --compare base sft=runs/demo/sft/adapter rl=runs/demo/rl/final/adapter eval.n=8

Each checkpoint is a LoRA adapter folder (adapter_config.json) or a fully fine-tuned model folder
(config.json); all are checked before any model loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from pipeline.config import Config
from pipeline.data.prompts import filter_long_prompts
from pipeline.eval.evaluation import (PAIRED, EvalReport, compare_markdown, evaluate_problems, load_eval_problems,
                                 paired_differences, plot_compare)
from pipeline.core.models import load_checkpoint, load_tokenizer, prepare_model, resolve_device
from pipeline.rollout import make_engine
from stages.common import run_stage, stage_dir, stage_parser
from stages.preflight import check_adapter_rank, check_checkpoint

log = logging.getLogger(__name__)

BASE = "base"


def parse_checkpoints(items: list[str]) -> dict[str, str | None]:
    """`base`, `label=path` or `path` -> {label: adapter folder, None for the base model}."""
    checkpoints: dict[str, str | None] = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or "/" in label:
            label, path = item, item
        checkpoints[label] = None if path == BASE else path
    return checkpoints


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "checkpoint"


def run_eval(config: Config, adapters: dict[str, str | None], reference: str | None = None) -> dict[str, dict]:
    """Evaluate each checkpoint (label -> adapter or full model folder, None = base) on the same problems in one engine.

    One checkpoint writes `<output_dir>/eval/report.json` and `summary.md`; several write one
    `<slug>/` folder each plus `compare.md`, `compare.json` and `compare.png`, and each summary but
    the `reference`'s (default: the first label) gets its paired difference from the reference
    (`pipeline.eval.evaluation.PAIRED`). Returns label -> summary.
    """
    if reference is not None and reference not in adapters:
        raise ValueError(f"reference checkpoint {reference!r} is not among {', '.join(adapters)}")
    check_checkpoints(config, adapters)
    cfg, out = config.eval, stage_dir(config, "eval")
    model_path = prepare_model(config.model.name, config.model.cache_dir)
    tokenizer = load_tokenizer(model_path)
    problems = load_eval_problems(cfg.dataset, split=cfg.split, levels=cfg.levels, limit=cfg.problems,
                                  seed=cfg.seed)
    problems = filter_long_prompts(tokenizer, problems, config.data.system_prompt, config.data.max_prompt_tokens)
    device = resolve_device(config.device)
    log.info("eval: %d problems from %s, n=%d, checkpoints: %s", len(problems), cfg.dataset, cfg.n, ", ".join(adapters))
    # The base model first, while the engine still holds the untouched weights.
    order = sorted(adapters, key=lambda label: adapters[label] is not None)
    engine = make_engine(config.rollout, model_path, device=device, seed=cfg.seed)
    reports: dict[str, EvalReport] = {}
    try:
        for label in order:
            if adapters[label] is not None:
                policy = load_checkpoint(model_path, adapters[label], dtype=config.model.dtype)
                engine.update_weights(policy)
                del policy
            report = evaluate_problems(
                engine, tokenizer, problems, system_prompt=config.data.system_prompt, n=cfg.n,
                temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                max_prompt_tokens=config.data.max_prompt_tokens, k_list=cfg.k, stop=config.rollout.stop,
                extract=config.reward.answer_extraction,
                timeout=config.reward.timeout, workers=config.reward.workers,
            )
            report.summary = {"checkpoint": adapters[label] or BASE, "dataset": cfg.dataset, **report.summary}
            _write(report, out if len(adapters) == 1 else out / _slug(label), label)
            reports[label] = report
    finally:
        engine.close()
    summaries = {label: reports[label].summary for label in adapters}
    if len(adapters) > 1:
        for label, paired in paired_differences(reports, reference or next(iter(adapters))).items():
            summaries[label][PAIRED] = paired
        table = compare_markdown(summaries)
        (out / "compare.md").write_text(f"# Evaluation: {cfg.dataset}\n\n{table}")
        (out / "compare.json").write_text(json.dumps(summaries, indent=1))
        plot_compare(summaries, out / "compare.png")
        print(table)
        log.info("eval: wrote %s, %s and %s", out / "compare.md", out / "compare.json", out / "compare.png")
    return summaries


def _write(report: EvalReport, folder: Path, label: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    report.to_json(folder / "report.json")
    markdown = report.to_markdown()
    (folder / "summary.md").write_text(f"# Evaluation: {label}\n\n{markdown}")
    print(f"\n{label}\n{markdown}")
    log.info("eval: wrote %s and %s", folder / "report.json", folder / "summary.md")


def check_checkpoints(config: Config, adapters: dict[str, str | None]) -> list[str]:
    """Each checkpoint is an adapter or model folder that the engine accepts (an adapter's rank within
    rollout.max_lora_rank with adapter sync); ModelError or ConfigError naming the first that is not."""
    lines = []
    for label, path in adapters.items():
        if path is not None:
            what = check_checkpoint(path, f"checkpoint {label!r}")
            check_adapter_rank(config, path, f"checkpoint {label!r}")
            lines.append(f"checkpoint {label}: {path} ({what})")
    return lines


def checkpoints(config: Config, args: argparse.Namespace) -> dict[str, str | None]:
    """label -> folder (None = base) from --compare, else eval.compare (after the base model), else
    --adapter or model.adapter."""
    if args.compare:
        return parse_checkpoints(args.compare)
    if config.eval.compare:
        return {BASE: None, **parse_checkpoints(config.eval.compare)}
    adapter = args.adapter or config.model.adapter
    return {adapter or BASE: adapter}


def main_with(config: Config, args: argparse.Namespace) -> dict[str, dict]:
    return run_eval(config, checkpoints(config, args))


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("eval", __doc__.splitlines()[0])
    parser.add_argument("--adapter", help="a LoRA adapter folder to evaluate (default: model.adapter)")
    parser.add_argument(
        "--compare", nargs="+", metavar="CKPT",
        help="checkpoints to compare side by side: `base`, an adapter folder, or label=folder",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    run_stage(main_with, build_parser(), argv, checks=[lambda config, args: check_checkpoints(config, checkpoints(config, args))])


if __name__ == "__main__":
    main()
