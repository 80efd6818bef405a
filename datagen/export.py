"""Export the default train/test sets: reasoning-gym and synthetic problems at levels 1-5.

    python -m datagen.export --seed 0 --out datasets

Deterministic for a seed. Each level gets its share of both files (40/30/20/5/5 %); the test
set never shares a (normalised) problem text with the train set. Every row has a worked
solution ending in `\\boxed{answer}`: the generator's own where it has one, else computed here.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy

from datagen import synthetic
from pipeline.data.problems import GYM_PREFIX, Problem, gym_problems

LEVEL_SHARE = {1: 0.40, 2: 0.30, 3: 0.20, 4: 0.05, 5: 0.05}
SIMPLE_ANSWER = re.compile(r"-?\d+(\.\d+)?(/\d+)?")
"""Gym answers kept: integers, decimals and fractions, which a `\\boxed{}` verifier can check."""


@dataclass(frozen=True)
class Source:
    name: str
    """`synthetic/<family>` or `reasoning_gym/<task>`."""
    level: int
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)
    """reasoning-gym config overrides that set the difficulty."""


_ARITH = {"operators": ("+", "-", "*"), "allow_negation": False, "format_style": "natural"}
SOURCES = [
    Source("synthetic/arithmetic", 1, 3.0),
    Source("synthetic/word_one_step", 1, 2.0),
    Source("reasoning_gym/basic_arithmetic", 1, 1.5, {"min_terms": 2, "max_terms": 2, "max_digits": 1,
                                                      "allow_parentheses": False, **_ARITH}),
    Source("reasoning_gym/chain_sum", 1, 1.5, {"min_terms": 2, "max_terms": 2, "max_digits": 2}),
    Source("synthetic/two_step", 2, 2.0),
    Source("synthetic/linear", 2, 1.5),
    Source("synthetic/word_two_step", 2, 1.5),
    Source("reasoning_gym/chain_sum", 2, 1.0, {"min_terms": 3, "max_terms": 3, "max_digits": 2}),
    Source("reasoning_gym/basic_arithmetic", 2, 1.0, {"min_terms": 3, "max_terms": 3, "max_digits": 1,
                                                      **_ARITH}),
    Source("reasoning_gym/simple_equations", 2, 1.0, {"min_terms": 2, "max_terms": 2, "max_value": 12}),
    *(Source(f"synthetic/{name}", 3) for name in
      ("remainder", "gcd_lcm", "binomial", "digit_sum", "multiples")),
    Source("reasoning_gym/gcd", 3, 0.6, {"max_value": 100}),
    Source("reasoning_gym/lcm", 3, 0.6, {"max_value": 30}),
    Source("reasoning_gym/fraction_simplification", 3, 0.6, {"max_value": 30, "max_factor": 10,
                                                              "styles": ("plain",)}),
    Source("reasoning_gym/leg_counting", 3, 0.6, {"min_animals": 2, "max_animals": 3, "max_instances": 6}),
    Source("reasoning_gym/simple_geometry", 3, 0.6, {"min_sides": 3, "max_sides": 4}),
    *(Source(f"synthetic/{name}", 4) for name in
      ("divisors", "totient", "trailing_zeros", "power_mod", "counting", "sum_product")),
    Source("reasoning_gym/gsm_symbolic", 4, 2.0),
    Source("reasoning_gym/coin_flip", 4, 0.5, {"min_trials": 3, "max_trials": 6}),
    Source("reasoning_gym/count_primes", 4, 0.5, {"max_n": 150}),
    *(Source(f"synthetic/{name}", 5) for name in
      ("crt", "vieta", "reciprocal_pairs", "inclusion_exclusion", "power_sum")),
]


README = """# Datasets

Math problems with checkable answers for rlvr, written by `datagen/export.py`
(do not edit by hand; re-run the export).

| file | problems |
| --- | ---: |
| train.jsonl | {n_train} |
| test.jsonl | {n_test} |

`test.jsonl` is held out: no problem text appears in both files (compared after
normalising case, spacing and punctuation). Both files are stratified by level
(40 / 30 / 20 / 5 / 5 % for levels 1-5) and shuffled.

## Schema: one JSON object per line

| field | type | meaning |
| --- | --- | --- |
| problem | string | the question |
| answer | string | the gold answer: an integer, a decimal or a fraction, checkable by a `\\boxed{{}}` math verifier |
| solution | string | a short worked solution ending in `\\boxed{{answer}}` |
| level | int 1-5 | 1 one-step arithmetic; 2 two-step arithmetic, linear equations; 3 remainders, gcd/lcm, binomials, digit sums, simple word problems; 4-5 AIME-flavoured number theory, counting, algebra, GSM-style word problems |
| source | string | `synthetic/<family>` or `reasoning_gym/<task>` |

Load with `pipeline.data.problems.load_problems("datasets/train.jsonl")` (preset `rlvr`).

## Levels

{levels}

## Sources

{sources}

## Provenance

* `reasoning_gym/<task>`: drawn offline from the procedural generators of the
  reasoning-gym package, version {version} (Apache-2.0,
  https://github.com/open-thought/reasoning-gym), with the per-level task settings in
  `datagen/export.py`. Only tasks whose answers are numbers or fractions are used.
  Solutions: gsm_symbolic's own worked answers; for the other tasks a short
  solution computed by the exporter.
* `synthetic/<family>`: this project's generators (`datagen/synthetic.py`),
  computed with Python integers and sympy; answers are integers 0-999.
* Exported with (deterministic for the seed and the package versions):

      python -m datagen.export --seed {seed} --out datasets --train-size {train_size} --test-size {test_size}
"""


def normalize(text: str) -> str:
    """Problem text for deduplication: lower case, tokens split from punctuation, single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _gym_steps(task: str, p: Problem) -> str:
    """A short computed solution for a reasoning-gym problem (without the final boxed line)."""
    meta = p.extra["metadata"]
    if task in ("basic_arithmetic", "chain_sum"):
        return f"{meta['expression']} = {p.answer}."
    if task == "simple_equations":
        var = sympy.Symbol(meta["variable"])
        lhs, rhs = (sympy.sympify(side) for side in meta["equation"].split("="))
        expr = sympy.expand(lhs - rhs)
        a, c = expr.coeff(var), -expr.subs(var, 0)
        return f"Collect the {var} terms on one side: {a}{var} = {c}, so {var} = {c}/{a} = {p.answer}."
    if task == "gcd":
        a, b = meta["numbers"]
        steps = []
        while b:
            steps.append(f"{a} = {a // b} × {b} + {a % b}")
            a, b = b, a % b
        return f"By the Euclidean algorithm: {'; '.join(steps)}. The last nonzero remainder is {a}."
    if task == "lcm":
        a, b = meta["numbers"]
        return f"gcd({a}, {b}) = {math.gcd(a, b)}, so lcm = {a} × {b} / {math.gcd(a, b)} = {p.answer}."
    if task == "fraction_simplification":
        n, d = meta["numerator"], meta["denominator"]
        g = math.gcd(n, d)
        return f"gcd({n}, {d}) = {g}; dividing both by {g} gives {n // g}/{d // g}."
    if task == "leg_counting":
        from reasoning_gym.arithmetic.leg_counting import ANIMALS

        parts = [f"{count} × {ANIMALS[name]}" for name, count in meta["animals"].items()]
        return f"Legs per animal times the count: {' + '.join(parts)} = {p.answer}."
    if task == "simple_geometry":
        n, total, known = meta["n_sides"], meta["total_interior_sum"], _num(meta["sum_of_known_angles"])
        return (f"The interior angles sum to ({n} - 2) × 180 = {total}; the known ones sum to {known}, "
                f"so {total} - {known} = {p.answer}.")
    if task == "coin_flip":
        n, k = meta["num_trials"], meta["k_heads"]
        ks = [k] if meta["problem_type"] == "exact" else list(range(k, n + 1))
        ways = sum(math.comb(n, i) for i in ks)
        terms = " + ".join(f"C({n}, {i})" for i in ks)
        return f"P = ({terms}) / 2^{n} = {ways}/{2**n} = {p.answer}."
    if task == "count_primes":
        primes = ", ".join(map(str, meta["primes"])) or "none"
        return f"The primes from {meta['start']} to {meta['end']} are: {primes}. That is {p.answer}."
    raise KeyError(f"no computed solution for reasoning_gym/{task}")


def draw(source: Source, n: int, seed: int) -> list[Problem]:
    """`n` problems from one source, with level set and a worked solution."""
    kind, _, name = source.name.partition("/")
    if kind == "synthetic":
        return synthetic.generate(n, seed, families=[name])
    problems = []
    for p in gym_problems(name, n, seed, **source.config):
        if not SIMPLE_ANSWER.fullmatch(p.answer):
            continue
        steps = p.solution or f"{_gym_steps(name, p)}\nThe answer is \\boxed{{{p.answer}}}"
        problems.append(Problem(p.problem, p.answer, steps, source.level, p.source))
    return problems


def _draw_level(level: int, need: int, seed: int, seen: set[str]) -> list[Problem]:
    """At least `need` problems of one level, new to `seen`, split across its sources by weight."""
    sources = [s for s in SOURCES if s.level == level]
    total = sum(s.weight for s in sources)
    pool: list[Problem] = []
    for source in sources:
        quota, got = math.ceil(1.1 * need * source.weight / total), 0
        for attempt in range(8):
            if got >= quota:
                break
            round_seed = zlib.crc32(f"{seed}/{source.name}/{level}/{attempt}".encode())
            for p in draw(source, 2 * (quota - got) + 16, round_seed):
                key = normalize(p.problem)
                if key not in seen and got < quota:
                    seen.add(key)
                    pool.append(p)
                    got += 1
    if len(pool) < need:
        raise RuntimeError(f"level {level}: only {len(pool)} distinct problems for the {need} needed")
    return pool


def build(seed: int, train_size: int, test_size: int) -> tuple[list[Problem], list[Problem]]:
    """The (train, test) problems, each stratified by level as LEVEL_SHARE says."""
    seen: set[str] = set()
    train: list[Problem] = []
    test: list[Problem] = []
    for level, share in LEVEL_SHARE.items():
        n_test, n_train = round(share * test_size), round(share * train_size)
        pool = _draw_level(level, n_test + n_train, seed, seen)
        random.Random(f"{seed}:split:{level}").shuffle(pool)
        test += pool[:n_test]
        train += pool[n_test : n_test + n_train]
    overlap = {normalize(p.problem) for p in train} & {normalize(p.problem) for p in test}
    if overlap:
        raise RuntimeError(f"{len(overlap)} problems are in both train and test, e.g. {next(iter(overlap))!r}")
    rng = random.Random(f"{seed}:order")
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def _write_jsonl(problems: list[Problem], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(p.to_row(), ensure_ascii=False) + "\n")


def _counts_table(train: list[Problem], test: list[Problem], key: str) -> str:
    tr, te = Counter(getattr(p, key) for p in train), Counter(getattr(p, key) for p in test)
    rows = [f"| {k} | {tr[k]} | {te[k]} |" for k in sorted(set(tr) | set(te))]
    return "\n".join([f"| {key} | train | test |", "| --- | ---: | ---: |", *rows])


def _readme(train: list[Problem], test: list[Problem], seed: int) -> str:
    return README.format(
        n_train=len(train), n_test=len(test), seed=seed, train_size=len(train), test_size=len(test),
        version=importlib.metadata.version("reasoning-gym"),
        levels=_counts_table(train, test, "level"), sources=_counts_table(train, test, "source"),
    )


def export(
    seed: int, out: Path, train_size: int = 6000, test_size: int = 600
) -> tuple[list[Problem], list[Problem]]:
    """Write `train.jsonl`, `test.jsonl` and `README.md` into `out`."""
    train, test = build(seed, train_size, test_size)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(train, out / "train.jsonl")
    _write_jsonl(test, out / "test.jsonl")
    (out / "README.md").write_text(_readme(train, test, seed), encoding="utf-8")
    return train, test


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("datasets"))
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--test-size", type=int, default=600)
    args = parser.parse_args(argv)
    train, test = export(args.seed, args.out, args.train_size, args.test_size)
    print(f"wrote {len(train)} train and {len(test)} test problems to {args.out}")


if __name__ == "__main__":
    main()
