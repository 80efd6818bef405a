"""Worker process for math-verify equivalence checks (docs/algorithms.md §7, accuracy).

Started by ``rewards.verifier_pool`` as ``python -I _verify_worker.py SOFT_TIMEOUT MEMORY_MB``
(a standalone script: it imports only math-verify, never the ``rewards`` package).
math-verify's own ``signal.alarm`` timeouts work here because checks run in
this process's main thread; the parent enforces the hard wall-clock limit.

Two rules tighten plain math-verify (docs/rewards.md, accuracy):

* **Whole parses only.** Both sides are parsed as LaTeX alone. math-verify's
  default also falls back to extracting a plain expression from text that is
  not valid LaTeX, which keeps the part it understood (``4\\sqrt(2)`` read as
  ``4``); such an answer stays unparsed here and is judged wrong.
* **Precision.** Numbers written without a decimal point (integers, fractions,
  powers, radicals, ...) compare exactly: math-verify's numeric shortcut for
  them (a 15-digit ``evalf`` that chops small values, so ``2^{-98}`` = ``2^{-99}``)
  is replaced by an exact comparison, after which its symbolic check runs as
  before. When either side holds a decimal, both are rounded (math-verify's
  ``float_rounding``) to the gold's written decimal places when the gold is a
  decimal (the gold decides: ``1.0`` != ``0.95``, ``0.0000001`` != ``0.0000002``),
  else to the answer's (``0.33`` = ``\\frac{1}{3}``). A decimal answer of zeros
  (``0.0``) rounds nothing away: it matches only a gold that is zero, so writing
  fewer digits never earns credit.

Protocol, one line per message: the parent writes a JSON list of
``[index, answer, gold]`` items; the worker answers ``ready`` once after its
imports, then ``<index> <0|1>`` per item, in order.
"""

import json
import logging
import os
import re
import resource
import sys

from math_verify import LatexExtractionConfig, grader, parse, verify
from math_verify.errors import TimeoutException
from sympy import Float, Number
from sympy.matrices import MatrixBase

_GOLD_CACHE_SIZE = 256
_LATEX_ONLY = [LatexExtractionConfig()]
_DECIMAL = re.compile(r"\d*\.(\d+)")
_ZERO_DECIMAL = re.compile(r"[-+]?0*\.0+")
_DEFAULT_ROUNDING = 6  # math-verify's float_rounding; used only when a decimal appears without a literal
_library_numeric_eq = grader.sympy_numeric_eq


def _numeric_eq(a, b, float_rounding: int, numeric_precision: int) -> bool:
    """math-verify's ``sympy_numeric_eq``, exact for compound numbers without a decimal."""
    compound_exact = not (isinstance(a, MatrixBase) or isinstance(b, MatrixBase)
                          or grader.is_atomic_or_pct_atomic(a, Number) or grader.is_atomic_or_pct_atomic(b, Number)
                          or a.has(Float) or b.has(Float))
    if not compound_exact:
        return _library_numeric_eq(a, b, float_rounding, numeric_precision)
    try:
        return bool(grader.safe_sympy_doit(a) == grader.safe_sympy_doit(b))  # symbolic check follows if False
    except Exception:
        return False


grader.sympy_numeric_eq = _numeric_eq  # math-verify looks it up at call time, sets and relations included


def _as_latex(answer: str) -> str:
    """Wrap a bare answer (``42``, ``\\frac{1}{2}``, ``x=3``) so math-verify parses it as LaTeX."""
    return "$" + answer.strip().strip("$") + "$"


def _parse(answer: str, soft_timeout: int) -> list:
    return parse(_as_latex(answer), extraction_config=_LATEX_ONLY, parsing_timeout=soft_timeout)


def decimal_places(*texts: str) -> int:
    """Fewest decimal places written in any decimal literal of ``texts`` (``0.33`` -> 2)."""
    places = [len(m.group(1)) for text in texts for m in _DECIMAL.finditer(text)]
    return min(places) if places else _DEFAULT_ROUNDING


def comparison_places(answer: str, gold: str) -> int:
    """Decimal places both sides are rounded to: the gold's when it writes a decimal, else the
    answer's; an all-zero decimal answer (``0.00``) gets none rounded away."""
    if _DECIMAL.search(gold):
        return decimal_places(gold)
    if _ZERO_DECIMAL.fullmatch(answer.strip().strip("$").strip()):
        return _DEFAULT_ROUNDING
    return decimal_places(answer)


def equivalent(answer: str, gold: str, gold_parsed: list, soft_timeout: int) -> bool:
    """Verdict for ``answer`` against ``gold`` (already parsed as ``gold_parsed``); never raises."""
    try:
        return bool(verify(gold_parsed, _parse(answer, soft_timeout), float_rounding=comparison_places(answer, gold),
                           timeout_seconds=soft_timeout))
    except (Exception, TimeoutException):
        return False


def _serve(soft_timeout: int, reply_fd: int) -> None:
    gold_cache: dict[str, list] = {}
    equivalent("1/2", "0.5", _parse("0.5", soft_timeout), soft_timeout)  # warm up the parsers before timed work
    os.write(reply_fd, b"ready\n")
    for line in sys.stdin:
        for index, answer, gold in json.loads(line):
            if gold not in gold_cache:
                if len(gold_cache) >= _GOLD_CACHE_SIZE:
                    gold_cache.clear()
                try:
                    gold_cache[gold] = _parse(gold, soft_timeout)
                except (Exception, TimeoutException):
                    gold_cache[gold] = []
            verdict = equivalent(answer, gold, gold_cache[gold], soft_timeout)
            os.write(reply_fd, f"{index} {int(verdict)}\n".encode())


def main() -> None:
    soft_timeout, memory_mb = int(sys.argv[1]), int(sys.argv[2])
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # huge powers hit MemoryError, not the OOM killer
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    _serve(soft_timeout, reply_fd)  # returns at EOF, i.e. when the trainer closes the pipe or dies


if __name__ == "__main__":
    main()
