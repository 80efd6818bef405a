"""Samples/s of the RL step on Ray against the single process (docs/design.md, "Scaling out").

    .venv/bin/python benchmarks/scale.py [--adapter runs/bench/sft/adapter] [--steps 2 --prompts 4 --group 4
                                         --max-tokens 32 --engine hf]

One run measures, one after the other in this process, the same RL step (configs/demo.yaml, the
default model from `--adapter`, the SFT adapter, so groups have reward variance and the update
runs; `--engine` hf or vllm, LoRA) as:

* `single`: one process, no Ray (the reference: ratio 1.0);
* `ray-1`: the same work through Ray with one rollout worker (`cluster.address=local`): the Ray
  path's overhead (actor calls, the object store, a second process holding the base model);
* `async-1`: one-step-off-policy RL (`rl.max_staleness=1`, docs/design.md "Asynchronous RL") on
  one rollout worker: the worker generates the next step's batch while the learner trains, so
  against `ray-1` (the same processes, synchronous) it shows what the overlap buys;
* `rollout-2`: two rollout workers;
* with `--learner-ranks`, also `learner-2` (two data-parallel learner ranks, gloo on CPU) and
  `rollout-2+learner-2`: `LEARNER_VARIANTS` below.

Each variant runs one warm-up step, then `--steps` timed steps; samples/s is the samples of a
step over its median wall time, its ratio is against `single`, and the median phase times
(generate: the learner's wait for rollouts; reward, learn, sync) say where the time went, with
the idle shares of the step: the learner waiting for rollouts (`idle/learner_waiting_rollouts_s`)
and the rollout workers waiting between generations (`idle/rollout_waiting_weights_s`). Ray's
start (seconds) is not counted. On a 2-core machine expect no speed-up: two workers, or a worker
generating while the learner trains, share the same cores the single process already used; on
separate devices the overlap of `async-1` hides the shorter of generation and learning.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # not benchmarks/, whose rewards.py would shadow the `rewards` package
PHASES = ("generate", "reward", "learn", "sync")
SFT_ADAPTER = REPO / "runs" / "bench" / "sft" / "adapter"
"""The SFT adapter benchmarks/vs_trl.py makes once and caches: a start whose groups have reward variance."""
IDLE = {"learner idle": "idle/learner_waiting_rollouts_s", "rollout idle": "idle/rollout_waiting_weights_s"}
"""The idle shares reported: seconds of the step a side waited for the other."""
VARIANTS: dict[str, list[str]] = {
    "single": [],
    "ray-1": ["cluster.address=local"],
    "async-1": ["cluster.address=local", "rl.max_staleness=1"],
    "rollout-2": ["cluster.rollout_workers=2", "cluster.cpus_per_rollout_worker=0.5"],
}
LEARNER_VARIANTS: dict[str, list[str]] = {
    "learner-2": ["cluster.learner_workers=2", "cluster.cpus_per_learner_worker=0.5"],
    "rollout-2+learner-2": ["cluster.rollout_workers=2", "cluster.learner_workers=2",
                            "cluster.cpus_per_rollout_worker=0.5", "cluster.cpus_per_learner_worker=0.5"],
}
"""Data-parallel learner ranks (docs/design.md, "Scaling out"): measured with `--learner-ranks`."""


def measure(overrides: list[str], steps: int) -> dict[str, float]:
    """Median step time, phase times and idle times (s) of `steps` RL steps after one warm-up step."""
    from pipeline.config import load_config
    from pipeline.rl.trainer import Trainer

    config = load_config(REPO / "configs" / "demo.yaml", [*overrides, f"rl.steps={steps + 1}"])
    trainer = Trainer(config)
    try:
        trainer.train_step()  # warm-up: first calls, allocations, Ray's first object transfer
        records = []
        for _ in range(steps):
            trainer.step += 1
            records.append(trainer.train_step())
    finally:
        trainer.close()
        del trainer
        gc.collect()
    result = {"step": statistics.median(r["time/step"] for r in records)}
    result.update({p: statistics.median(r.get(f"time/{p}", 0.0) for r in records) for p in PHASES})
    result.update({name: statistics.median(r.get(key, 0.0) for r in records) for name, key in IDLE.items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--learner-ranks", action="store_true", help="also measure LEARNER_VARIANTS")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants to run")
    parser.add_argument("--adapter", default=None,
                        help="the SFT adapter RL starts from (benchmarks/vs_trl.py caches one in "
                             "runs/bench/sft/adapter): from the instruct model every reward is 0 and the "
                             "learner skips every row, so `learn` would measure nothing")
    parser.add_argument("--out", default="runs/bench-scale")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    samples = args.prompts * args.group
    adapter = args.adapter or (str(SFT_ADAPTER) if SFT_ADAPTER.is_dir() else None)
    if adapter is None:
        print("no --adapter (and no runs/bench/sft/adapter): from the instruct model every reward is 0 and "
              "`learn` measures a skipped update", file=sys.stderr)
    common = [*([f"model.adapter={adapter}"] if adapter else []), f"output_dir={args.out}", f"rollout.engine={args.engine}", f"rollout.max_tokens={args.max_tokens}",
              f"rl.prompts_per_step={args.prompts}", f"rl.group_size={args.group}",
              f"rl.mini_batch_size={samples}", f"rl.micro_batch_size={min(8, samples)}", "rl.micro_batch_tokens=null",
              "rl.eval_every=0", "rl.save_every=0", "reward.workers=1"]
    variants = {**VARIANTS, **(LEARNER_VARIANTS if args.learner_ranks else {})}
    if args.variants:
        variants = {name: variants[name] for name in args.variants.split(",")}
    results = {}
    for name, overrides in variants.items():
        started = time.perf_counter()
        results[name] = measure(common + overrides, args.steps)
        print(f"{name}: {json.dumps({k: round(v, 2) for k, v in results[name].items()})} "
              f"({time.perf_counter() - started:.0f} s with start-up)", flush=True)
    base = results["single"]["step"] if "single" in results else float("nan")
    print(f"\n{samples} samples/step, {args.steps} timed steps, median seconds")
    print("| variant | samples/s | vs single | step | " + " | ".join(PHASES) + " | "
          + " | ".join(f"{name} share" for name in IDLE) + " |")
    print("|---|---|---|---|" + "---|" * (len(PHASES) + len(IDLE)))
    for name, r in results.items():
        print(f"| {name} | {samples / r['step']:.2f} | {base / r['step']:.2f}x | {r['step']:.1f} | "
              + " | ".join(f"{r[p]:.1f}" for p in PHASES) + " | "
              + " | ".join(f"{r[idle] / r['step']:.0%}" for idle in IDLE) + " |")
    if "ray-1" in results:
        overhead = results["ray-1"]["step"] / base - 1
        print(f"\nRay overhead at 1 worker: {overhead:+.1%} of the single process's step (target: within 10%)")
    if "ray-1" in results and "async-1" in results:
        gain = results["ray-1"]["step"] / results["async-1"]["step"]
        print(f"max_staleness=1 vs synchronous on one Ray worker: {gain:.2f}x samples/s")


if __name__ == "__main__":
    main()
