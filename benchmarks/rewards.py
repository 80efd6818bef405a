"""Throughput of the accuracy reward (docs/algorithms.md §7) against plain sequential math-verify.

Builds 2,000 deterministic (completion, gold) pairs: integers, fractions, decimals
and LaTeX forms, about a quarter wrong, plus a few pathological ones (huge
powers, malformed LaTeX, megabyte-sized or non-UTF-8 text) flagged as such, and
the pairs of the rules where the accuracy reward deliberately differs from plain
math-verify (docs/rewards.md, accuracy: tolerance, half-parsed answers, digit
groups, several boxes), each with its right value.
Both sides are warmed up first, then timed on the same non-pathological pairs,
alternating slice by slice so that both see the same load on a shared machine:

* scorer: ``rewards.RewardScorer`` with one ``accuracy`` term (worker pool, fast path);
* baseline: ``verify(parse(gold), parse(completion))`` in this process, one pair at a time.

The pathological pairs go through the scorer only (in-process math-verify has no
hard time limit, which is the point of the pool), timed separately. Prints both
throughputs and ends with ``speedup=<ratio> mismatches=<count>`` (mismatches on
non-pathological pairs other than rule pairs the scorer gets right; these are
listed with their right values and counted as ``rule_mismatches``, and a rule
pair the scorer gets wrong is counted in ``rule_wrong``).
Run: ``.venv/bin/python benchmarks/rewards.py [--workers N] [--pairs N]``.
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


# (final answer with its boxes as written in the completion, gold, right verdict): the rule kinds of docs/rewards.md
RULE_PAIRS = [
    ("\\boxed{0.0000001}", "0.0000002", False), ("\\boxed{\\frac{1}{2^{98}}}", "\\frac{1}{2^{99}}", False),
    ("\\boxed{0.33}", "\\frac{1}{3}", True), ("\\boxed{0.125}", "\\frac{1}{8}", True),
    ("\\boxed{0.000012}", "0.000013", False), ("\\boxed{2^{-30}}", "2^{-31}", False),
    ("\\boxed{4\\sqrt(2)}", "4", False), ("\\boxed{4\\sqrt(2)}", "4\\sqrt{2}", True),
    ("\\boxed{2\\sqrt(3)x}", "2", False), ("\\boxed{3 )}", "3", False),
    ("\\boxed{10\\,000}", "10000", True), ("\\boxed{10\\,000}", "0", False),
    ("\\boxed{1\\,234\\,567}", "1234567", True), ("\\boxed{12 345}", "12345", True),
    ("$x=\\boxed{2}$ and $y=\\boxed{3}$", "2, 3", True), ("$\\boxed{3}$, $\\boxed{4}$", "\\{3, 4\\}", True),
    ("$x=\\boxed{2}$ and $y=\\boxed{3}$", "3", False),
]


@dataclass(frozen=True)
class Pair:
    completion: str
    gold: str
    pathological: bool = False
    right: bool | None = None  # set for a rule pair: the verdict the rule gives


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


def _completion(rng: random.Random, answer: str, boxed: bool = True) -> str:
    """Reasoning, then ``answer`` in a box (``boxed=False``: ``answer`` already holds its boxes)."""
    reasoning = " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 8)))
    final = f"$\\boxed{{{answer}}}$" if boxed else answer
    return f"{reasoning}\n\nTherefore the final answer is {final}."


def _pathological() -> list[Pair]:
    return [Pair("Huge: \\boxed{9^{9^{9^9}}}", "5", True), Pair("\\boxed{5}", "9^{9^{9^9}}", True),
            Pair("Unclosed \\boxed{\\frac{1}{2", "1/2", True), Pair("\\boxed{\\sqrt[}{\\frac}}", "2", True),
            Pair("x" * 1_000_000 + "\\boxed{4}", "4", True), Pair("\udcff\ud800 \\boxed{3}", "3", True),
            Pair("\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}", "1", True),
            Pair("\\boxed{10^{10^{10}}+1}", "10^{10^{10}}", True)]


def build_pairs(n: int = 2000, seed: int = 0) -> list[Pair]:
    """``n`` deterministic pairs; every 250th slot holds a pathological one, and the
    rule pairs (``RULE_PAIRS``) are spread evenly over the first ``n`` slots."""
    rng, odd = random.Random(seed), _pathological()
    pairs = []
    for i in range(n):
        if i % 250 == 249:
            pairs.append(odd[(i // 250) % len(odd)])
            continue
        gold, right, wrong = _forms(rng, i % 4)
        answer = rng.choice(wrong) if rng.random() < 0.25 else rng.choice(right)
        pairs.append(Pair(_completion(rng, answer), gold))
    for k, (answer, gold, right) in enumerate(RULE_PAIRS):
        at = (2 * k + 1) * n // (2 * len(RULE_PAIRS))
        at += at % 250 == 249  # keep the pathological slots
        pairs[at] = Pair(_completion(rng, answer, boxed=False), gold, right=right)
    return pairs


def baseline(pairs: list[Pair]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(f"${p.gold}$"), parse(p.completion))) for p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4, help="alternate scorer/baseline over this many slices")
    parser.add_argument("--pairs", type=int, default=2000, help="number of pairs (at least 4 x the rule pairs)")
    args = parser.parse_args()
    pairs = build_pairs(max(args.pairs, 4 * len(RULE_PAIRS)))
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
    differ = [i for i, (a, b) in enumerate(zip(ours, reference)) if (a > 0.5) != b]
    by_rule = [i for i in differ if normal[i].right == (ours[i] > 0.5)]
    mismatches = [i for i in differ if i not in by_rule]
    rule_wrong = [i for i, p in enumerate(normal) if p.right is not None and p.right != (ours[i] > 0.5)]
    for label, indices in (("by rule", by_rule), ("MISMATCH", mismatches), ("RULE WRONG", rule_wrong)):
        for i in indices[:20]:
            print(f"{label}: gold={normal[i].gold!r} completion=...{normal[i].completion[-45:]!r} "
                  f"scorer={ours[i]} baseline={reference[i]} right={normal[i].right}")
    scorer_rate, baseline_rate = len(normal) / scorer_time, len(normal) / baseline_time
    print(f"pairs: {len(pairs)} ({len(normal)} timed, {len(odd)} pathological), "
          f"correct: {sum(reference)} by the baseline, {sum(s > 0.5 for s in ours)} by the scorer")
    print(f"scorer:   {scorer_time:7.2f} s  {scorer_rate:8.1f} pairs/s")
    print(f"baseline: {baseline_time:7.2f} s  {baseline_rate:8.1f} pairs/s (sequential math_verify)")
    print(f"pathological: {len(odd)} pairs in {odd_time:.2f} s through the scorer, scores {odd_scores}")
    print(f"speedup={scorer_rate / baseline_rate:.2f} mismatches={len(mismatches)} "
          f"rule_mismatches={len(by_rule)} rule_wrong={len(rule_wrong)}")


if __name__ == "__main__":
    main()
