"""Throughput of the accuracy reward (docs/algorithms.md §7) against plain sequential math-verify.

Builds 2,000 deterministic (completion, gold) pairs: integers, fractions, decimals
and LaTeX forms, about a quarter wrong, plus a few pathological ones (huge
powers, malformed LaTeX, megabyte-sized or non-UTF-8 text) flagged as such.
Both sides are warmed up first, then timed on the same non-pathological pairs,
alternating slice by slice so that both see the same load on a shared machine:

* scorer: ``rewards.RewardScorer`` with one ``accuracy`` term (worker pool, fast path);
* baseline: ``verify(parse(gold), parse(completion))`` in this process, one pair at a time.

The pathological pairs go through the scorer only (in-process math-verify has no
hard time limit, which is the point of the pool), timed separately. Prints both
throughputs and ends with ``speedup=<ratio> mismatches=<count>`` (mismatches on
non-pathological pairs). Run: ``.venv/bin/python benchmarks/rewards.py [--workers N]``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass

# This file shares its name with the package it measures: keep its folder off sys.path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import rewards  # noqa: E402
from rewards.verifier_pool import default_workers  # noqa: E402

FILLER = ["We start by writing down what is given.", "Let $n = 3$ and expand the expression.",
          "Simplifying both sides gives an equivalent equation.", "Checking small cases confirms the pattern.",
          "Multiplying through by the denominator, we get $2x + 1 = 7$.", "So the remaining term vanishes."]


@dataclass(frozen=True)
class Pair:
    completion: str
    gold: str
    pathological: bool = False


def _forms(rng: random.Random, kind: int) -> tuple[str, list[str], list[str]]:
    """(gold, equivalent answers, wrong answers) for one problem of ``kind``."""
    if kind == 0:  # integers
        g = rng.randint(-500, 50_000)
        return str(g), [str(g), f"{g}.0", f"{g:,}"], [str(g + rng.randint(1, 9))]
    if kind == 1:  # fractions
        a, b = rng.randint(1, 40), rng.randint(2, 41)
        while a % b == 0:
            b += 1
        return (f"\\frac{{{a}}}{{{b}}}", [f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\dfrac{{{2 * a}}}{{{2 * b}}}"],
                [f"\\frac{{{a + 1}}}{{{b}}}"])
    if kind == 2:  # decimals
        k = rng.randint(1, 399)
        return f"{k / 4:g}", [f"{k / 4:g}", f"\\frac{{{k}}}{{4}}", f"{k / 4:.3f}"], [f"{k / 4 + 0.5:g}"]
    k, m = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7])  # LaTeX forms
    return rng.choice([
        (f"{k}\\sqrt{{{m}}}", [f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m}}}"], [f"{k + 1}\\sqrt{{{m}}}"]),
        (f"\\frac{{{k}\\pi}}{{{m}}}", [f"\\frac{{{k}\\pi}}{{{m}}}", f"{k}\\pi/{m}"], [f"\\frac{{\\pi}}{{{m}}}"]),
        (f"x^2+{2 * k}x+{k * k}", [f"(x+{k})^2", f"x^2+{2 * k}x+{k * k}"], [f"(x-{k})^2"]),
    ])


def _completion(rng: random.Random, answer: str) -> str:
    reasoning = " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 8)))
    return f"{reasoning}\n\nTherefore the final answer is $\\boxed{{{answer}}}$."


def _pathological() -> list[Pair]:
    return [Pair("Huge: \\boxed{9^{9^{9^9}}}", "5", True), Pair("\\boxed{5}", "9^{9^{9^9}}", True),
            Pair("Unclosed \\boxed{\\frac{1}{2", "1/2", True), Pair("\\boxed{\\sqrt[}{\\frac}}", "2", True),
            Pair("x" * 1_000_000 + "\\boxed{4}", "4", True), Pair("\udcff\ud800 \\boxed{3}", "3", True),
            Pair("\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}", "1", True),
            Pair("\\boxed{10^{10^{10}}+1}", "10^{10^{10}}", True)]


def build_pairs(n: int = 2000, seed: int = 0) -> list[Pair]:
    """``n`` deterministic pairs; every 250th slot holds a pathological one."""
    rng, odd = random.Random(seed), _pathological()
    pairs = []
    for i in range(n):
        if i % 250 == 249:
            pairs.append(odd[(i // 250) % len(odd)])
            continue
        gold, right, wrong = _forms(rng, i % 4)
        answer = rng.choice(wrong) if rng.random() < 0.25 else rng.choice(right)
        pairs.append(Pair(_completion(rng, answer), gold))
    return pairs


def baseline(pairs: list[Pair]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(f"${p.gold}$"), parse(p.completion))) for p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4, help="alternate scorer/baseline over this many slices")
    args = parser.parse_args()
    pairs = build_pairs()
    normal = [p for p in pairs if not p.pathological]
    odd = [p for p in pairs if p.pathological]
    term = {"name": "accuracy", "weight": 1.0, "params": {}}
    ours: list[float] = []
    reference: list[bool] = []
    scorer_time = baseline_time = 0.0
    with rewards.RewardScorer([term], workers=args.workers, timeout=args.timeout) as scorer:
        start = time.perf_counter()
        scorer([normal[0].completion], answer=[normal[0].gold])  # workers import math-verify
        print(f"pool start: {time.perf_counter() - start:.2f} s ({args.workers} workers)")
        baseline(normal[:1])  # warm up math-verify's parser in this process
        step = -(-len(normal) // args.rounds)
        for part in (normal[i:i + step] for i in range(0, len(normal), step)):  # interleaved: same load
            start = time.perf_counter()
            ours += scorer([p.completion for p in part], answer=[p.gold for p in part]).total
            scorer_time += time.perf_counter() - start
            start = time.perf_counter()
            reference += baseline(part)
            baseline_time += time.perf_counter() - start
        start = time.perf_counter()
        odd_scores = scorer([p.completion for p in odd], answer=[p.gold for p in odd]).total
        odd_time = time.perf_counter() - start
    mismatches = [i for i, (a, b) in enumerate(zip(ours, reference)) if (a > 0.5) != b]
    for i in mismatches[:10]:
        print(f"mismatch: gold={normal[i].gold!r} completion=...{normal[i].completion[-60:]!r} "
              f"scorer={ours[i]} baseline={reference[i]}")
    scorer_rate, baseline_rate = len(normal) / scorer_time, len(normal) / baseline_time
    print(f"pairs: {len(pairs)} ({len(normal)} timed, {len(odd)} pathological), "
          f"correct: {sum(reference)} by the baseline, {sum(s > 0.5 for s in ours)} by the scorer")
    print(f"scorer:   {scorer_time:7.2f} s  {scorer_rate:8.1f} pairs/s")
    print(f"baseline: {baseline_time:7.2f} s  {baseline_rate:8.1f} pairs/s (sequential math_verify)")
    print(f"pathological: {len(odd)} pairs in {odd_time:.2f} s through the scorer, scores {odd_scores}")
    print(f"speedup={scorer_rate / baseline_rate:.2f} mismatches={len(mismatches)}")


if __name__ == "__main__":
    main()
