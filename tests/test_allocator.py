"""glibc's malloc set to keep freed memory (pipeline/core/allocator.py): a 20 MiB tensor comes from
the heap, not from a fresh mapping, and its memory stays in the heap after it is freed."""

import subprocess
import sys

import pytest

from pipeline.core.allocator import keep_freed_memory

PROBE = """
import sys, torch
from pipeline.core.allocator import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None

def heap_mib():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            return (end - start) / 2**20
    return 0.0

before = heap_mib()
t = torch.ones(5 << 20)  # 20 MiB of float32
grown = heap_mib() - before
del t
print(took, grown, heap_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_large_tensor_comes_from_the_heap_and_stays_there():
    results = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        took, grown, after_free = out.stdout.split()
        results[mode] = (took, float(grown), float(after_free))
    # by default glibc maps the 20 MiB afresh (above its first mmap threshold, 128 KiB)
    assert results["default"][0] == "None" and results["default"][1] < 20, results
    took, grown, after_free = results["keep"]
    assert took == "True" and grown >= 20 and after_free >= 20, results  # served by the heap, kept


def test_it_can_be_applied_again():
    assert keep_freed_memory() == keep_freed_memory()
