"""How close one RL step runs to this machine's limits: matmul peak, memory bandwidth, the learner's
model FLOPs utilisation, generation against the bandwidth bound, and padding.

    .venv/bin/python benchmarks/roofline.py [--adapter runs/bench/sft/adapter] [--prompts 4 --samples 8
        --max-tokens 160] [--micro-batch-tokens 4096] [--update-repeats 3] [--gen-prompts 16 --hf-prompts 2]
        [--repeats 5] [--profile] [--tiny]

One process, in this order (a busy machine moves every rate: the load average is printed; ratios
measured side by side in one run are what to compare):
1. Peak: the best GFLOP/s of `torch.matmul` on the model's GEMM shapes ([tokens, hidden] x the
   attention, MLP and LM-head weights) in the learner's compute dtype (bf16 where the learner autocasts,
   `pipeline.core.optim.uses_bf16_autocast` of the recipe's `rl.bf16_autocast`; else float32).
   Bandwidth: a large `copy_` (bytes read + written over seconds).
2. One RL step of the demo recipe (configs/demo.yaml: LoRA, GRPO, accuracy + format rewards) from
   `--adapter` (the SFT adapter, so groups have reward variance; none = a fresh adapter): the
   engine samples prompts x samples, then real `Learner.update`s on that batch from the same
   state, alternating `--update-repeats` times (medians): padded micro-batches of
   `rl.micro_batch_size` rows, padded ones of `--micro-batch-tokens` (`rl.pass_overhead_tokens`
   weighing passes), and packed ones of that budget (`rl.pack_sequences`, docs/algorithms.md §14).
   Model FLOPs per computed position (padding included, as the hardware computes it):
   `2N` forward + `2N` backward (activation gradients through the frozen base; no weight
   gradients), `6 N_lora` (forward, activation and weight gradients of the adapter), attention
   scores and values (`4 d ctx` per layer forward, twice that backward), and on completion
   positions the LM head (`2 d V` forward + `2 d V` backward) plus the log-prob read, its
   gradient and the entropy read over the vocabulary (`~5 V` each; pipeline/core/logprobs.py
   `linear_logprobs`). MFU = FLOPs / update seconds / peak. Then the cost of a pass: one
   forward + backward of the first 2, 4, ... rows and of all, fitted as `a + b * computed
   positions` (`pass_cost`); `a / b` is what `rl.pass_overhead_tokens` should be on this machine.
3. The LM head's read (forward and backward of logp, entropy as a statistic) on the update's
   completion positions, with the model's head under the learner's autocast, two ways
   alternating `--repeats` times (medians, and their ratio): through the head's logits
   (`token_logprobs` / `entropy_from_logits`, the path of a trained head and of every head
   before the fused read) and fused (`linear_logprobs`, the learner's path for a frozen head).
4. Generation: the engine's tokens/s against the bandwidth bound at that batch size: every decode
   step reads the weights once and each sequence's KV cache, so at most
   `batch / (bytes per step / bandwidth)` tokens/s. `gen_vs_hf`: the engine's tokens/s over HF
   `generate`'s (benchmarks/rollout.py's measurement) on `--gen-prompts` x samples (HF on
   `--hf-prompts` of them); per-token rates, the issue's 64 x 8 x 128 with `--gen-prompts 64
   --max-tokens 128`.
5. `--profile`: torch.profiler over one more update, the operators by self CPU time.

Last line: `learner_mfu=<fraction> padding=<fraction> gen_vs_hf=<ratio>` (MFU and padding of the
recipe's token-budget update: packed where configs/demo.yaml packs).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# benchmarks/rewards.py would shadow the `rewards` package: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO / "benchmarks"]
sys.path.insert(0, str(REPO))
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "3600")

import torch  # noqa: E402

from benchmarks.rollout import math_problems, timed_generate  # noqa: E402
from pipeline.algorithms.advantages import AdvantageInputs, compute_advantages  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.core.models import bf16_is_native, resolve_device  # noqa: E402
from pipeline.core.optim import uses_bf16_autocast  # noqa: E402
from pipeline.learner.batch import RolloutBatch  # noqa: E402
from pipeline.learner.learner import Learner  # noqa: E402
from pipeline.core.forward import distinct_prompts  # noqa: E402
from pipeline.core.packing import packed_rows, row_width  # noqa: E402
from pipeline.learner.micro_batches import computed_positions  # noqa: E402
from pipeline.rl.trainer import Trainer  # noqa: E402


def best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` calls of `fn` (after one warm-up): the least disturbed by other load."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(hidden: int, shapes: dict[str, int], dtype: torch.dtype, tokens: int = 1024) -> dict[str, float]:
    """GFLOP/s of [tokens, hidden] x [hidden, n] for each named n."""
    rates = {}
    for name, n in shapes.items():
        a, b = torch.randn(tokens, hidden, dtype=dtype), torch.randn(hidden, n, dtype=dtype)
        seconds = best_seconds(lambda: torch.matmul(a, b), repeats=5)
        rates[name] = 2 * tokens * hidden * n / seconds / 1e9
    return rates


def bandwidth(size_mib: int = 1024) -> float:
    """GB/s of a `copy_` of `size_mib` MiB (read + write)."""
    src = torch.empty(size_mib * 2**20, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    seconds = best_seconds(lambda: dst.copy_(src), repeats=3)
    return 2 * src.numel() / seconds / 1e9


@dataclass
class ModelShape:
    layers: int
    hidden: int
    kv_dim: int
    vocab: int
    n_base: int
    """Parameters of the decoder's linear layers (the embedding lookup and LM head excluded)."""
    n_lora: int
    head_dim: int


def model_shape(learner: Learner) -> ModelShape:
    config = learner.model.config
    n_base = n_lora = 0
    for name, module in learner.model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
            if "lora_" in name:
                n_lora += module.weight.numel()
            else:
                n_base += module.weight.numel()
    head_dim = config.hidden_size // config.num_attention_heads
    return ModelShape(config.num_hidden_layers, config.hidden_size, config.num_key_value_heads * head_dim,
                      config.vocab_size, n_base, n_lora, head_dim)


def update_flops(shape: ModelShape, batch: RolloutBatch, micro_batches: list[torch.Tensor],
                 packed: bool = False) -> dict[str, float]:
    """Model FLOPs of forward + backward over `micro_batches`, padded or `packed` (module docstring, step 2)."""
    seqs = batch.seqs
    prompt_len = seqs.attention_mask[:, : seqs.prompt_width].sum(-1)
    comp_len = seqs.completion_mask.sum(-1)
    groups = distinct_prompts(seqs)[2]  # rows that share a prompt (as the learner's split counts them)
    count = dict(linear=0.0, lora=0.0, attention=0.0, head=0.0, vocab_reads=0.0)
    for micro in micro_batches:
        positions, _ = computed_positions(prompt_len[micro], comp_len[micro], groups[micro], packed)
        width_p, width_c = int(prompt_len[micro].max()), max(1, int(comp_len[micro].max()))
        prompts_per_row = 1  # the prompts a completion row's keys hold side by side (packing.pack's K)
        completion_positions = len(micro) * width_c
        if packed:
            rows = packed_rows(comp_len[micro])
            prompts_per_row = max(len({int(groups[micro][i]) for i in row}) for row in rows)
            width_c = row_width(rows, comp_len[micro].tolist())
            completion_positions = len(rows) * width_c
        prompt_positions = positions - completion_positions
        count["linear"] += 4 * shape.n_base * positions
        count["lora"] += 6 * shape.n_lora * positions
        # context per position: a prompt position sees half the prompt on average, a completion
        # position its row's prompt keys and half the completion; x3 for forward + backward
        context = prompt_positions * width_p / 2 + completion_positions * (prompts_per_row * width_p + width_c / 2)
        count["attention"] += 3 * 4 * shape.layers * shape.hidden * context
        count["head"] += 4 * shape.hidden * shape.vocab * completion_positions
        count["vocab_reads"] += 3 * 5 * shape.vocab * completion_positions  # log-prob, its gradient, entropy
    count["total"] = sum(count.values())
    return count


def head_read_seconds(learner: Learner, positions: int, repeats: int) -> dict[str, float]:
    """Median seconds of the LM head's read over `positions` rows (module docstring, step 4):
    through the logits and fused, alternating, from the same random states and labels."""
    from pipeline.core.logprobs import entropy_from_logits, linear_logprobs, token_logprobs
    from pipeline.core.optim import autocast

    head = learner.model.get_output_embeddings()
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(positions, head.in_features, generator=g)
    labels = torch.randint(0, head.out_features, (positions,), generator=g)
    weights = torch.randn(positions, generator=g)
    sampling = learner.sampling

    def through_logits(h):
        logits = head(h)
        return token_logprobs(logits, labels, **sampling), entropy_from_logits(logits.detach(), **sampling)

    def fused(h):
        return linear_logprobs(h, head.weight, labels, bias=head.bias, with_entropy=True, **sampling)

    times: dict[str, list[float]] = {"logits": [], "fused": []}
    for _ in range(repeats):
        for name, read in (("logits", through_logits), ("fused", fused)):
            h = hidden.clone().requires_grad_(True)
            start = time.perf_counter()
            with autocast(learner.device, learner.rl.bf16_autocast):
                logp, _entropy = read(h)
            (logp * weights).sum().backward()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def pass_cost(learner: Learner, batch: RolloutBatch, repeats: int = 2) -> tuple[float, float]:
    """(seconds per pass, seconds per computed position): a least-squares fit of one forward +
    backward as the update runs it (the learner's `_forward` with the entropy read: its autocast
    and LoRA) over passes of the first 2, 4, ... rows of `batch` and all of them (two or more rows
    of a group: the shared prompt's decoder call and the completions'), each the fastest of
    `repeats`. Their ratio is `rl.pass_overhead_tokens` measured (module docstring, step 2)."""
    prompt_len, comp_len, groups = learner._lengths(batch)
    sizes = sorted({min(2**k, len(batch)) for k in range(1, len(batch).bit_length() + 1)})
    learner.model.train()
    rows, seconds = [], []
    for size in sizes:
        index = torch.arange(size)
        seqs = batch.seqs.rows(index).to(learner.device)

        def forward_backward():
            out, _ = learner._forward(seqs, entropy=True)
            (out.logp.float() * seqs.completion_mask).sum().backward()

        seconds.append(best_seconds(forward_backward, repeats))
        rows.append([1.0, float(computed_positions(prompt_len[index], comp_len[index], groups[index])[0])])
    learner.model.zero_grad(set_to_none=True)
    fit = torch.linalg.lstsq(torch.tensor(rows, dtype=torch.float64),
                             torch.tensor(seconds, dtype=torch.float64)[:, None]).solution
    return float(fit[0]), float(fit[1])


def decode_bound(shape: ModelShape, engine_bytes: int, batch: int, mean_context: float, gbps: float) -> float:
    """Tokens/s at most: one decode step of `batch` sequences reads the weights and each KV cache."""
    weights = (shape.n_base + shape.vocab * shape.hidden) * engine_bytes  # linears + the (tied) head
    kv = batch * mean_context * 2 * shape.layers * shape.kv_dim * engine_bytes
    return batch / ((weights + kv) / (gbps * 1e9))


def tiny_model(out: Path) -> Path:
    """The tests' tiny Llama (tests/conftest.py: 2 layers, hidden 64, SmolLM2's tokenizer)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pipeline.core.models import prepare_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_model(cache_dir=REPO / "models"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def bench_config(args: argparse.Namespace, out: Path, model: Path | None) -> Config:
    overrides = [f"output_dir={out}", f"model.cache_dir={REPO / 'models'}", "rl.steps=1", "rl.eval_every=0",
                 f"data.train={REPO / 'datasets' / 'train.jsonl'}", f"data.test={REPO / 'datasets' / 'test.jsonl'}",
                 f"rl.prompts_per_step={args.prompts}", f"rl.group_size={args.samples}",
                 f"rl.mini_batch_size={args.prompts * args.samples}", f"rollout.max_tokens={args.max_tokens}",
                 "rl.log_completions=0", f"seed={args.seed}"]
    if args.adapter:
        overrides.append(f"model.adapter={Path(args.adapter).resolve()}")
    if model is not None:
        overrides.append(f"model.name={model}")
    return load_config(REPO / "configs" / "demo.yaml", overrides)


def layouts(tokens: int) -> tuple[tuple[str, int | None, bool], ...]:
    """The updates compared, (label, `rl.micro_batch_tokens`, `rl.pack_sequences`): padded passes
    of `rl.micro_batch_size` rows (the baseline), padded and packed passes of `tokens` positions."""
    return ("fixed", None, False), ("budget", tokens, False), ("packed", tokens, True)


def timed_update(learner: Learner, batch, scores, advantages, state, params) -> tuple[float, dict[str, float]]:
    """One `Learner.update` from the saved (parameters, optimiser) state; seconds and stats."""
    with torch.no_grad():
        for p, saved in zip(learner.params, params):
            p.copy_(saved)
    learner.load_state_dict(copy.deepcopy(state))
    start = time.perf_counter()
    stats = learner.update(batch, scores, advantages, torch.Generator().manual_seed(0))
    return time.perf_counter() - start, stats


def learned_micro_batches(learner: Learner, batch: RolloutBatch, advantages) -> list[torch.Tensor]:
    """The micro-batches `Learner.update` computes (one mini-batch, on-policy: the demo's)."""
    rows = learner.learned_rows(batch, advantages.advantages, torch.arange(len(batch)))
    return learner._micro_batches(batch, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", help="the SFT adapter RL starts from (benchmarks/vs_trl.py caches one)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny random Llama instead of SmolLM2-135M")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--gen-prompts", type=int, default=16, help="prompts for gen_vs_hf (the issue: 64)")
    parser.add_argument("--hf-prompts", type=int, default=2, help="of those, prompts HF generate runs")
    parser.add_argument("--update-repeats", type=int, default=3, choices=range(1, 100), metavar="N",
                        help="alternating repeats of the three updates (1-99)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats of the head-read timing")
    parser.add_argument("--profile", action="store_true", help="torch.profiler over one more update")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
        parser.error(f"--adapter {args.adapter}: no adapter_config.json there (`benchmarks/vs_trl.py --system sft` "
                     "makes runs/bench/sft/adapter, the demo's SFT run, in a few minutes)")

    work = Path(tempfile.mkdtemp(prefix="roofline-"))
    config = bench_config(args, work / "run", tiny_model(work / "tiny") if args.tiny else None)
    device = resolve_device(config.device)
    dtype = torch.bfloat16 if uses_bf16_autocast(device, config.rl.bf16_autocast) else torch.float32
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; learner dtype "
          f"{str(dtype).removeprefix('torch.')} (bf16 native: {bf16_is_native(device)})", flush=True)

    trainer = Trainer(config)
    learner = trainer.learner
    shape = model_shape(learner)
    mc = learner.model.config
    rates = matmul_peak(shape.hidden, {"qkv": shape.hidden + 2 * shape.kv_dim, "mlp_up": mc.intermediate_size,
                                       "lm_head": shape.vocab}, dtype)
    peak = max(rates.values())
    gbps = bandwidth()
    print("matmul GFLOP/s   : " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()) + f" -> peak {peak:.0f}")
    print(f"memory bandwidth : {gbps:.1f} GB/s (1 GiB copy)")
    print(f"model            : {shape.layers} layers, hidden {shape.hidden}, N {shape.n_base / 1e6:.1f}M linear, "
          f"N_lora {shape.n_lora / 1e6:.2f}M, vocab {shape.vocab}", flush=True)

    # --- one RL step's rollout, then the update twice from the same state
    record: dict = {}
    groups, record = trainer.rollout()
    batch = trainer.build_batch(groups)
    gen_tokens = sum(len(c.token_ids) for g in groups for c in g.completions)
    scores = learner.score(batch)
    logp = scores.logp_old if scores.logp_old is not None else batch.logp_engine
    advantages = compute_advantages(config.algorithm, AdvantageInputs(
        rewards=batch.rewards, group_size=batch.group_size, mask=batch.loss_mask, valid=batch.valid,
        logp=logp, logp_ref=scores.logp_ref, values=scores.values))
    stand_in = not len(learner.learned_rows(batch, advantages.advantages, torch.arange(len(batch))))
    if stand_in:  # a start that never scores (no --adapter, --tiny): no row would be computed
        advantages = type(advantages)(torch.randn(len(batch), generator=torch.Generator().manual_seed(args.seed)))
    state = learner.state_dict()
    params = [p.detach().clone() for p in learner.params]
    results: dict[str, dict] = {}
    for _ in range(args.update_repeats):  # alternating, so both see the same load
        for label, tokens, packed in layouts(args.micro_batch_tokens):
            learner.rl = learner.rl.model_copy(update={"micro_batch_tokens": tokens, "pack_sequences": packed})
            seconds, stats = timed_update(learner, batch, scores, advantages, state, params)
            micro = learned_micro_batches(learner, batch, advantages)
            if label not in results:
                results[label] = dict(times=[], stats=stats, micro=len(micro),
                                      flops=update_flops(shape, batch, micro, packed))
            results[label]["times"].append(seconds)
    for result in results.values():
        result["seconds"] = sorted(result["times"])[len(result["times"]) // 2]
    print(f"rollout          : {len(batch)} completions, mean length {record['response_length/mean']:.0f}, "
          f"reward {record['reward/mean']:.2f}, learned rows {results['fixed']['stats']['train/learned_frac']:.2f}"
          + (" (no reward variance: seeded random advantages stand in)" if stand_in else ""))
    for label, r in results.items():
        f = r["flops"]
        setting = (f"micro_batch_size={config.rl.micro_batch_size}" if label == "fixed"
                   else f"micro_batch_tokens={args.micro_batch_tokens}" + (", packed" if label == "packed" else ""))
        print(f"update {setting:30s}: {r['seconds']:.2f} s (median of {len(r['times'])}), {r['micro']} micro-batches, "
              f"padding {r['stats']['perf/padding_frac']:.3f}; {f['total'] / 1e9:.1f} GFLOP (linear "
              f"{f['linear'] / 1e9:.1f}, lora {f['lora'] / 1e9:.2f}, attention {f['attention'] / 1e9:.1f}, "
              f"head {f['head'] / 1e9:.1f}, vocab reads {f['vocab_reads'] / 1e9:.2f}) -> "
              f"{f['total'] / r['seconds'] / 1e9:.0f} GFLOP/s = MFU {f['total'] / r['seconds'] / 1e9 / peak:.3f}")
    print(f"vs fixed rows    : budget x{results['fixed']['seconds'] / results['budget']['seconds']:.2f}, packed "
          f"x{results['fixed']['seconds'] / results['packed']['seconds']:.2f} update speed (same run, side by side)",
          flush=True)

    learner.rl = learner.rl.model_copy(update={"pack_sequences": False})  # the cost the padded split weighs
    per_pass, per_position = pass_cost(learner, batch)
    print(f"pass overhead    : {per_pass:.2f} s per pass + {per_position * 1e3:.2f} ms per computed position "
          f"-> a pass costs {per_pass / per_position:.0f} positions (rl.pass_overhead_tokens: "
          f"{config.rl.pass_overhead_tokens})", flush=True)

    positions = int(batch.seqs.completion_mask.sum())
    head = head_read_seconds(learner, positions, args.repeats)
    print(f"LM head read     : {positions} positions, fwd+bwd median of {args.repeats}: through logits "
          f"{head['logits']:.2f} s, fused {head['fused']:.2f} s -> x{head['logits'] / head['fused']:.2f} "
          "(same run, alternating)", flush=True)

    # --- generation against the bandwidth bound, and against HF generate
    engine_bytes = torch.finfo(trainer.engine.dtype).bits // 8 if hasattr(trainer.engine, "dtype") else 4
    prompt_mean = float(batch.seqs.attention_mask[:, : batch.seqs.prompt_width].sum(-1).float().mean())
    context = prompt_mean + record["response_length/mean"] / 2
    bound = decode_bound(shape, engine_bytes, len(batch), context, gbps)
    step_rate = gen_tokens / record["time/generate"]
    print(f"generation (step): {step_rate:.0f} tok/s at batch {len(batch)}; bandwidth bound {bound:.0f} tok/s "
          f"({engine_bytes}-byte weights + KV over {gbps:.0f} GB/s) = {step_rate / bound:.3f} of it")
    from pipeline.config import DEFAULT_SYSTEM_PROMPT
    from pipeline.data.prompts import encode_prompts
    from pipeline.rollout import HFEngine, SamplingSettings

    prompts = encode_prompts(trainer.tokenizer, math_problems(args.gen_prompts), DEFAULT_SYSTEM_PROMPT, 384)
    sampling = SamplingSettings(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
    seconds, tokens = timed_generate(trainer.engine, prompts, sampling)
    engine_rate = tokens / seconds
    hf_seconds, hf_tokens = timed_generate(HFEngine(learner.model.eval(), trainer.tokenizer),
                                           prompts[: args.hf_prompts], sampling)
    hf_rate = hf_tokens / hf_seconds
    print(f"generation       : engine {engine_rate:.0f} tok/s ({args.gen_prompts} x {args.samples}), HF generate "
          f"{hf_rate:.0f} tok/s ({args.hf_prompts} x {args.samples}); bound at {args.gen_prompts * args.samples}: "
          f"{decode_bound(shape, engine_bytes, args.gen_prompts * args.samples, context, gbps):.0f} tok/s", flush=True)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            timed_update(learner, batch, scores, advantages, state, params)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    trainer.close()
    budget = results["packed" if config.rl.pack_sequences else "budget"]  # the recipe's layout
    mfu = budget["flops"]["total"] / budget["seconds"] / 1e9 / peak
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"learner_mfu={mfu:.3f} padding={budget['stats']['perf/padding_frac']:.3f} "
          f"gen_vs_hf={engine_rate / hf_rate:.2f}")


if __name__ == "__main__":
    main()
