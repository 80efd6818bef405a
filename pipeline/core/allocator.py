"""The training process's memory allocator: glibc's malloc set to keep freed memory for the next
tensors (docs/design.md, "Memory allocator").

PyTorch's CPU tensors come from malloc. By default glibc serves a request above its mmap
threshold (128 KiB at first, rising to at most 32 MiB) with fresh pages from the kernel and
returns freed memory above its trim threshold, so a training step's large activations and
vocabulary-sized chunks are faulted in and zeroed page by page on every use. Measured on one RL
update of SmolLM2-135M (2 cores): about 550k minor page faults by default, 2k with these settings; the
vocabulary-sized `mul`, `copy_` and `sub` of the head's read took 2.0, 1.9 and 1.9 s by default
and 0.6 s each with them. Intel's PyTorch CPU guide gets the same from tcmalloc or jemalloc, which
must be preloaded before the process starts; `mallopt` works from inside it.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
"""Requests up to 32 MiB (glibc's largest mmap threshold) come from the heap; up to 1 GiB of freed
heap stays with the process; the heap grows 64 MiB at a time."""


def keep_freed_memory() -> bool:
    """Apply `SETTINGS` to glibc's malloc for the rest of the process (Linux with glibc; elsewhere
    nothing). Returns whether every setting took. The cost: up to 1 GiB of freed memory is not
    handed back to the system while the process runs."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
