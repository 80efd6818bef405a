"""Worker process for math-verify equivalence checks (docs/algorithms.md §7, accuracy).

Started by ``rewards.verifier_pool`` as ``python -I _verify_worker.py SOFT_TIMEOUT MEMORY_MB``
(a standalone script: it imports only math-verify, never the ``rewards`` package).
math-verify's own ``signal.alarm`` timeouts work here because checks run in
this process's main thread; the parent enforces the hard wall-clock limit.

Protocol, one line per message: the parent writes a JSON list of
``[index, answer, gold]`` items; the worker answers ``ready`` once after its
imports, then ``<index> <0|1>`` per item, in order.
"""

import json
import logging
import os
import resource
import sys

from math_verify import parse, verify
from math_verify.errors import TimeoutException

_GOLD_CACHE_SIZE = 256


def _as_latex(answer: str) -> str:
    """Wrap a bare answer (``42``, ``\\frac{1}{2}``, ``x=3``) so math-verify parses it as LaTeX."""
    return "$" + answer.strip().strip("$") + "$"


def _parse(answer: str, soft_timeout: int) -> list:
    return parse(_as_latex(answer), parsing_timeout=soft_timeout)


def equivalent(answer: str, gold_parsed: list, soft_timeout: int) -> bool:
    """math-verify verdict for ``answer`` against an already parsed gold; never raises."""
    try:
        return bool(verify(gold_parsed, _parse(answer, soft_timeout), timeout_seconds=soft_timeout))
    except (Exception, TimeoutException):
        return False


def _serve(soft_timeout: int, reply_fd: int) -> None:
    gold_cache: dict[str, list] = {}
    equivalent("1/2", _parse("0.5", soft_timeout), soft_timeout)  # warm up the parsers before timed work
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
            verdict = equivalent(answer, gold_cache[gold], soft_timeout)
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
