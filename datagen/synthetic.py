"""The project's own AIME-style problems: integer answers 0-999 at difficulty levels 1-5.

Each family is a function `rng -> (problem, answer, steps)` computed with Python integers
and sympy; `make_problem` turns it into a `Problem` whose worked solution ends in
`\\boxed{answer}`. Everything is drawn from the `random.Random` passed in, so a seed fixes
the output. Levels: 1 one-step arithmetic, 2 two-step arithmetic and linear equations,
3 remainders, gcd/lcm, binomials, digit sums, 4-5 number theory, counting and algebra.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import sympy
from sympy.ntheory.modular import crt

from pipeline.data.problems import Problem

Family = Callable[[random.Random], tuple[str, int, str]]
FAMILIES: dict[str, tuple[int, Family]] = {}
"""Family name -> (level, generator); the source of its problems is `synthetic/<name>`."""

NAMES = ("Ana", "Ben", "Carla", "Dev", "Emma", "Femi", "Gus", "Hana", "Ivan", "Jia", "Liam", "Maya")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "coins", "toys")


def _family(level: int) -> Callable[[Family], Family]:
    def register(fn: Family) -> Family:
        FAMILIES[fn.__name__.lstrip("_")] = (level, fn)
        return fn

    return register


def _factors(n: int) -> str:
    """`360` -> `2^3 · 3^2 · 5`."""
    parts = sympy.factorint(n).items()
    return " · ".join(f"{p}^{e}" if e > 1 else str(p) for p, e in parts) or "1"


# ---- level 1: one step ----------------------------------------------------------------


ONE_STEP = {
    "+": ("What is {a} + {b}?", "What is {a} plus {b}?", "Compute {a} + {b}.", "Find the sum of {a} and {b}."),
    "-": ("What is {a} - {b}?", "What is {a} minus {b}?", "Compute {a} - {b}.", "Subtract {b} from {a}."),
    "×": ("What is {a} times {b}?", "What is {a} × {b}?", "Multiply {a} by {b}.",
          "Find the product of {a} and {b}."),
    "÷": ("What is {a} divided by {b}?", "What is {a} ÷ {b}?", "Compute {a} / {b}."),
}


@_family(1)
def _arithmetic(rng: random.Random) -> tuple[str, int, str]:
    op = rng.choice(list(ONE_STEP))
    if op == "+":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        c = a + b
    elif op == "-":
        a = rng.randint(2, 30)
        b = rng.randint(1, a)
        c = a - b
    elif op == "×":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        c = a * b
    else:
        b, c = rng.randint(2, 12), rng.randint(1, 12)
        a = b * c
    return rng.choice(ONE_STEP[op]).format(a=a, b=b), c, f"{a} {op} {b} = {c}."


@_family(1)
def _word_one_step(rng: random.Random) -> tuple[str, int, str]:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(2, 20), rng.randint(1, 20)
        return (f"{name} has {a} {items} and gets {b} more. How many {items} does {name} have now?",
                a + b, f"{name} has {a} + {b} = {a + b} {items}.")
    if kind == 1:
        a = rng.randint(3, 30)
        b = rng.randint(1, a)
        return (f"{name} has {a} {items} and gives {b} of them away. How many {items} are left?",
                a - b, f"{a} - {b} = {a - b} {items} are left.")
    if kind == 2:
        a, b = rng.randint(2, 10), rng.randint(2, 10)
        return (f"There are {a} bags with {b} {items} in each bag. How many {items} are there in total?",
                a * b, f"{a} × {b} = {a * b} {items}.")
    b, c = rng.randint(2, 10), rng.randint(2, 10)
    return (f"{name} shares {b * c} {items} equally among {b} friends. How many {items} does each friend get?",
            c, f"{b * c} ÷ {b} = {c} {items} each.")


# ---- level 2: two steps ---------------------------------------------------------------


@_family(2)
def _two_step(rng: random.Random) -> tuple[str, int, str]:
    a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 30)
    kind = rng.randrange(4)
    ab = a * b
    if kind == 0:
        return f"What is {a} × {b} + {c}?", ab + c, f"First {a} × {b} = {ab}, then {ab} + {c} = {ab + c}."
    if kind == 1:
        return f"What is {c} + {a} × {b}?", c + ab, (
            f"Multiply first: {a} × {b} = {ab}, then {c} + {ab} = {c + ab}."
        )
    if kind == 2:
        total = (c + a) * b
        return f"What is ({c} + {a}) × {b}?", total, f"First {c} + {a} = {c + a}, then {c + a} × {b} = {total}."
    c = rng.randint(1, ab)
    return f"What is {a} × {b} - {c}?", ab - c, f"First {a} × {b} = {ab}, then {ab} - {c} = {ab - c}."


@_family(2)
def _linear(rng: random.Random) -> tuple[str, int, str]:
    var = sympy.Symbol(rng.choice("xyznk"))
    x, a, b = rng.randint(0, 20), rng.randint(2, 9), rng.randint(1, 30)
    if rng.random() < 0.5:
        lhs, move = a * var + b, f"Subtract {b} from both sides: {a}{var} = {a * x}."
    else:
        lhs, move = a * var - b, f"Add {b} to both sides: {a}{var} = {a * x}."
    c = int(lhs.subs(var, x))
    (root,) = sympy.solve(sympy.Eq(lhs, c), var)
    equation = f"{sympy.sstr(lhs).replace('*', '')} = {c}"
    return f"Solve for {var}: {equation}.", int(root), f"{move} Divide by {a}: {var} = {root}."


@_family(2)
def _word_two_step(rng: random.Random) -> tuple[str, int, str]:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    if rng.random() < 0.5:
        c = rng.randint(1, a * b)
        return (f"{name} buys {a} packs of {items} with {b} in each pack and then gives away {c}. "
                f"How many {items} does {name} have left?",
                a * b - c, f"{name} buys {a} × {b} = {a * b} {items}; {a * b} - {c} = {a * b - c} are left.")
    c, q = rng.randint(2, 9), rng.randint(2, 12)
    a = rng.randint(1, min(9, c * q - 1))
    start = c * q - a
    return (f"{name} has {start} {items}, finds {a} more, and then shares them equally among {c} friends. "
            f"How many {items} does each friend get?", q, f"{start} + {a} = {c * q}, and {c * q} ÷ {c} = {q}.")


# ---- level 3: remainders, gcd/lcm, binomials, digit sums ------------------------------


@_family(3)
def _remainder(rng: random.Random) -> tuple[str, int, str]:
    n, m = rng.randint(100, 9999), rng.randint(3, 25)
    q, r = divmod(n, m)
    return f"What is the remainder when {n} is divided by {m}?", r, f"{n} = {m} × {q} + {r}, so it is {r}."


@_family(3)
def _gcd_lcm(rng: random.Random) -> tuple[str, int, str]:
    if rng.random() < 0.5:
        g = rng.randint(2, 30)
        a, b = (g * f for f in rng.sample(range(2, 13), 2))
        ans, what, rule = math.gcd(a, b), "greatest common divisor", "the lowest"
    else:
        a, b = rng.sample(range(4, 41), 2)
        ans, what, rule = math.lcm(a, b), "least common multiple", "the highest"
    steps = (f"{a} = {_factors(a)} and {b} = {_factors(b)}. "
             f"Taking {rule} power of each prime gives {_factors(ans)} = {ans}.")
    return f"What is the {what} of {a} and {b}?", ans, steps


@_family(3)
def _binomial(rng: random.Random) -> tuple[str, int, str]:
    n = rng.randint(5, 16)
    k = rng.randint(2, min(4, n - 2))
    ans = int(sympy.binomial(n, k))
    text = rng.choice([
        f"In how many ways can a committee of {k} people be chosen from {n} people?",
        f"How many subsets with exactly {k} elements does a set with {n} elements have?",
        f"A club has {n} members. In how many ways can {k} of them be picked to attend a meeting?",
    ])
    if k == 2 and rng.random() < 0.3:
        text = f"At a party, each of {n} people shakes hands once with every other. How many handshakes are there?"
    return text, ans, f"The order does not matter: C({n}, {k}) = {n}! / ({k}! · {n - k}!) = {ans}."


@_family(3)
def _digit_sum(rng: random.Random) -> tuple[str, int, str]:
    if rng.random() < 0.5:
        n = rng.randint(10_000, 9_999_999)
        text, pre = f"What is the sum of the digits of {n}?", ""
    else:
        a, k = rng.randint(2, 9), rng.randint(5, 12)
        n = a**k
        text, pre = f"What is the sum of the digits of {a}^{k}?", f"{a}^{k} = {n}. "
    digits = [int(d) for d in str(n)]
    return text, sum(digits), f"{pre}{' + '.join(map(str, digits))} = {sum(digits)}."


@_family(3)
def _multiples(rng: random.Random) -> tuple[str, int, str]:
    d, hi = rng.randint(3, 19), rng.randint(100, 2000)
    lo = rng.randint(1, hi // 2)
    ans = hi // d - (lo - 1) // d
    return (f"How many multiples of {d} are there between {lo} and {hi}, inclusive?", ans,
            f"Up to {hi} there are ⌊{hi}/{d}⌋ = {hi // d}; "
            f"below {lo} there are ⌊{lo - 1}/{d}⌋ = {(lo - 1) // d}. "
            f"So {hi // d} - {(lo - 1) // d} = {ans}.")


# ---- level 4: number theory, counting, algebra ---------------------------------------


@_family(4)
def _divisors(rng: random.Random) -> tuple[str, int, str]:
    if rng.random() < 0.5:
        n = 10**7
        while n > 10**6:
            n = math.prod(rng.choice([2, 3, 5, 7, 11, 13]) ** rng.randint(1, 4) for _ in range(3))
        exps = sympy.factorint(n).values()
        ans = int(sympy.divisor_count(n))
        return (f"How many positive divisors does {n} have?", ans,
                f"{n} = {_factors(n)}, so it has {' · '.join(str(e + 1) for e in exps)} = {ans} divisors.")
    n = rng.randint(10, 500)
    ans = int(sympy.divisor_sigma(n))
    divs = sympy.divisors(n)
    steps = f"The divisors are {', '.join(map(str, divs))}; their sum is {ans}."
    return f"What is the sum of all positive divisors of {n}?", ans, steps


@_family(4)
def _totient(rng: random.Random) -> tuple[str, int, str]:
    n = rng.randint(20, 999)
    ans = int(sympy.totient(n))
    primes = list(sympy.factorint(n))
    formula = " · ".join(f"(1 - 1/{p})" for p in primes)
    return (f"How many positive integers less than or equal to {n} are relatively prime to {n}?", ans,
            f"{n} = {_factors(n)}, so φ({n}) = {n} · {formula} = {ans}.")


@_family(4)
def _trailing_zeros(rng: random.Random) -> tuple[str, int, str]:
    n = rng.randint(20, 3000)
    terms = [n // 5**i for i in range(1, 6) if n // 5**i]
    return (f"How many zeros does {n}! end with?", sum(terms),
            f"Count factors of 5: {' + '.join(f'⌊{n}/{5**i}⌋' for i in range(1, len(terms) + 1))} = "
            f"{' + '.join(map(str, terms))} = {sum(terms)}.")


@_family(4)
def _power_mod(rng: random.Random) -> tuple[str, int, str]:
    a, m, k = rng.randint(2, 30), rng.randint(3, 19), rng.randint(20, 500)
    cycle, seen, x = [], {}, a % m
    while x not in seen:
        seen[x] = len(cycle)
        cycle.append(x)
        x = x * a % m
    start = seen[x]
    period = len(cycle) - start
    idx = k - 1 if k - 1 < start else start + (k - 1 - start) % period
    ans = pow(a, k, m)
    assert cycle[idx] == ans
    return (f"Find the remainder when {a}^{k} is divided by {m}.", ans,
            f"The powers {a}^1, {a}^2, ... mod {m} are {', '.join(map(str, cycle))}, "
            f"and from there cycle with period {period}. "
            f"So {a}^{k} ≡ {ans} (mod {m}).")


@_family(4)
def _counting(rng: random.Random) -> tuple[str, int, str]:
    if rng.random() < 0.5:
        a, b = rng.randint(2, 6), rng.randint(2, 6)
        ans = int(sympy.binomial(a + b, a))
        return (f"How many paths go from (0, 0) to ({a}, {b}) using unit steps right or up?", ans,
                f"Each path is {a + b} steps of which {a} go right: C({a + b}, {a}) = {ans}.")
    n, k = rng.randint(4, 15), rng.randint(2, 4)
    m = rng.randint(0, min(2, n // k))
    free = n - k * m
    ans = int(sympy.binomial(free + k - 1, k - 1))
    cond = f", with each child getting at least {m}" if m else ""
    give = f"Give each child {m} first, leaving {free}. " if m else ""
    return (f"In how many ways can {n} identical candies be given to {k} children{cond}?", ans,
            f"{give}By stars and bars: C({free} + {k - 1}, {k - 1}) = {ans}.")


@_family(4)
def _sum_product(rng: random.Random) -> tuple[str, int, str]:
    x, y = rng.randint(1, 15), rng.randint(1, 15)
    s, p = x + y, x * y
    if rng.random() < 0.5:
        return (f"If x + y = {s} and xy = {p}, what is x^2 + y^2?", s * s - 2 * p,
                f"x^2 + y^2 = (x + y)^2 - 2xy = {s * s} - {2 * p} = {s * s - 2 * p}.")
    return (f"If x + y = {s} and xy = {p}, what is (x - y)^2?", s * s - 4 * p,
            f"(x - y)^2 = (x + y)^2 - 4xy = {s * s} - {4 * p} = {s * s - 4 * p}.")


# ---- level 5: AIME-flavoured ---------------------------------------------------------


@_family(5)
def _crt(rng: random.Random) -> tuple[str, int, str]:
    m1, m2, m3 = rng.sample([3, 4, 5, 7, 8, 9, 11, 13], 3)
    while math.gcd(m1, m2) > 1 or math.gcd(m1 * m2, m3) > 1:
        m1, m2, m3 = rng.sample([3, 4, 5, 7, 8, 9, 11, 13], 3)
    x = rng.randint(1, min(999, m1 * m2 * m3 - 1))
    r1, r2, r3 = x % m1, x % m2, x % m3
    y12, _ = crt([m1, m2], [r1, r2])
    ans, mod = crt([m1, m2, m3], [r1, r2, r3])
    return (f"Find the smallest positive integer that leaves remainder {r1} when divided by {m1}, "
            f"remainder {r2} "
            f"when divided by {m2}, and remainder {r3} when divided by {m3}.", int(ans),
            f"The first two conditions give x ≡ {y12} (mod {m1 * m2}); "
            f"with the third, x ≡ {ans} (mod {mod}) "
            f"by the Chinese Remainder Theorem.")


@_family(5)
def _vieta(rng: random.Random) -> tuple[str, int, str]:
    x = sympy.Symbol("x")
    r, s, t = (rng.randint(-9, 9) for _ in range(3))
    poly = sympy.Poly(sympy.expand((x - r) * (x - s) * (x - t)), x)
    _, c2, c1, c0 = poly.all_coeffs()
    e1, e2 = -c2, c1
    text = sympy.sstr(poly.as_expr()).replace("**", "^").replace("*", "")
    return (f"Let r, s, t be the roots of {text} = 0. Find r^2 + s^2 + t^2.", e1 * e1 - 2 * e2,
            f"By Vieta, r + s + t = {e1} and rs + st + tr = {e2}. So r^2 + s^2 + t^2 = "
            f"{e1}^2 - 2·({e2}) = {e1 * e1 - 2 * e2}.")


@_family(5)
def _reciprocal_pairs(rng: random.Random) -> tuple[str, int, str]:
    n = rng.randint(6, 720)
    ans = int(sympy.divisor_count(n * n))
    return (f"How many ordered pairs of positive integers (x, y) satisfy 1/x + 1/y = 1/{n}?", ans,
            f"Clearing denominators, (x - {n})(y - {n}) = {n}^2 = {_factors(n * n)}, "
            f"with both factors positive. "
            f"Each divisor of {n * n} gives one pair, and {n * n} has {ans} divisors.")


@_family(5)
def _inclusion_exclusion(rng: random.Random) -> tuple[str, int, str]:
    a, b = rng.sample(range(2, 13), 2)
    n, l = rng.randint(100, 1500), math.lcm(a, b)
    ans = n - n // a - n // b + n // l
    return (f"How many positive integers less than or equal to {n} are divisible by neither {a} nor {b}?", ans,
            f"By inclusion-exclusion: {n} - ⌊{n}/{a}⌋ - ⌊{n}/{b}⌋ + ⌊{n}/{l}⌋ = "
            f"{n} - {n // a} - {n // b} + {n // l} = {ans}.")


@_family(5)
def _power_sum(rng: random.Random) -> tuple[str, int, str]:
    k = sympy.Symbol("k")
    n, p = rng.randint(10, 99), rng.randint(2, 4)
    total = int(sympy.summation(k**p, (k, 1, n)))
    return (f"Find the remainder when 1^{p} + 2^{p} + ... + {n}^{p} is divided by 1000.", total % 1000,
            f"The sum of the first {n} {p}th powers is {total}, whose last three digits give {total % 1000}.")


def make_problem(family: str, rng: random.Random) -> Problem:
    """One problem of `family`, redrawn until its answer is an integer in 0..999."""
    level, fn = FAMILIES[family]
    for _ in range(100):
        text, answer, steps = fn(rng)
        if 0 <= answer <= 999:
            solution = f"{steps}\nThe answer is \\boxed{{{answer}}}"
            return Problem(text, str(answer), solution, level, f"synthetic/{family}")
    raise RuntimeError(f"synthetic family {family!r} kept drawing answers outside 0..999")


def generate(
    n: int, seed: int, levels: Sequence[int] = (1, 2, 3, 4, 5), families: Sequence[str] | None = None
) -> list[Problem]:
    """`n` problems, each from a family chosen uniformly among `families` (default: all of `levels`)."""
    names = list(families) if families is not None else [f for f, (lvl, _) in FAMILIES.items() if lvl in levels]
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"unknown or no synthetic families {unknown}; known: {', '.join(FAMILIES)}")
    rng = random.Random(seed)
    return [make_problem(rng.choice(names), rng) for _ in range(n)]
