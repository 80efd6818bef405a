"""A process pool for math-verify checks with a hard per-item time limit (docs/algorithms.md §7).

``multiprocessing.Pool`` cannot abandon one stuck task, so this pool keeps one
pipe per worker process: the parent sends a chunk of items, the worker streams
back one verdict per item, and an item that exceeds ``timeout`` seconds of wall
clock is judged ``False``, its worker is killed (SIGKILL) and replaced, and the
rest of its chunk is handed to the next free worker.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["VerifierPool", "default_workers"]

_WORKER_SCRIPT = str(Path(__file__).with_name("_verify_worker.py"))
_STARTUP_TIMEOUT = 120.0  # seconds for a worker to import math-verify on a loaded machine


def default_workers() -> int:
    """Number of CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class _Worker:
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    in_flight: deque[int] = field(default_factory=deque)  # indices sent, answered in order
    deadline: float = math.inf
    buffer: bytes = b""

    @property
    def fd(self) -> int:
        return self.process.stdout.fileno()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:  # unflushed input to a dead process
                pass


class VerifierPool:
    """``workers`` math-verify processes; ``verify(items)`` checks ``(answer, gold)`` pairs in parallel.

    ``timeout`` is the hard wall-clock limit per item; math-verify's own signal
    timeouts are set to half of it so that most slow items end without a kill.
    ``memory_mb`` caps each worker's address space (huge powers raise MemoryError).
    Workers start lazily on the first call; ``close()`` stops them.
    """

    def __init__(self, workers: int | None = None, timeout: float = 5.0, memory_mb: int = 2048,
                 chunk_size: int = 16) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.num_workers = workers or default_workers()
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.chunk_size = chunk_size
        self.restarts = 0  # workers killed for exceeding the limit or found dead
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def _spawn(self) -> _Worker:
        soft_timeout = max(1, int(self.timeout // 2))
        command = [sys.executable, "-I", _WORKER_SCRIPT, str(soft_timeout), str(self.memory_mb)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   start_new_session=True)
        return _Worker(process)

    def verify(self, items: list[tuple[str, str]]) -> list[bool]:
        """Verdicts for ``(answer, gold)`` pairs, in order; a timed-out item is ``False``."""
        verdicts = [False] * len(items)
        if not items:
            return verdicts
        with self._lock:
            for worker in [w for w in self._workers if w.in_flight]:  # left busy by an interrupted call
                worker.kill()
                self._workers.remove(worker)
            while len(self._workers) < self.num_workers:
                self._workers.append(self._spawn())
            chunk = max(1, min(self.chunk_size, math.ceil(len(items) / (4 * self.num_workers))))
            todo = deque(list(range(start, min(start + chunk, len(items))))
                         for start in range(0, len(items), chunk))
            self._run(items, todo, verdicts)
        return verdicts

    def _run(self, items: list[tuple[str, str]], todo: deque[list[int]], verdicts: list[bool]) -> None:
        poller = select.poll()
        by_fd = {}
        for worker in self._workers:
            poller.register(worker.fd, select.POLLIN)
            by_fd[worker.fd] = worker
        while todo or any(w.in_flight for w in self._workers):
            for worker in list(self._workers):
                if worker.ready and not worker.in_flight and todo:
                    if worker.process.poll() is not None:  # died while idle: replace, lose nothing
                        self._replace(worker, todo, poller, by_fd, reason="exited")
                    else:
                        self._send(worker, todo.popleft(), items)
            wake = min([w.deadline for w in self._workers]
                       + [w.started + _STARTUP_TIMEOUT for w in self._workers if not w.ready])
            for fd, _ in poller.poll(max(0.0, wake - time.monotonic()) * 1000):
                worker = by_fd[fd]
                data = os.read(fd, 1 << 16)
                if data:
                    self._receive(worker, data, verdicts)
                    continue
                self._replace(worker, todo, poller, by_fd, reason="exited")
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.in_flight and now > worker.deadline:
                    self._replace(worker, todo, poller, by_fd, reason="timed out")
                elif not worker.ready and now > worker.started + _STARTUP_TIMEOUT:
                    raise RuntimeError(f"math-verify worker did not start within {_STARTUP_TIMEOUT:.0f} s")

    def _send(self, worker: _Worker, indices: list[int], items: list[tuple[str, str]]) -> None:
        line = json.dumps([[i, items[i][0], items[i][1]] for i in indices]) + "\n"
        worker.in_flight.extend(indices)
        worker.deadline = time.monotonic() + self.timeout
        try:
            worker.process.stdin.write(line.encode())
            worker.process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died; its EOF is noticed by the poll loop

    def _receive(self, worker: _Worker, data: bytes, verdicts: list[bool]) -> None:
        *lines, worker.buffer = (worker.buffer + data).split(b"\n")
        for line in lines:
            if line == b"ready":
                worker.ready = True
                continue
            index, verdict = line.split()
            if worker.in_flight and worker.in_flight[0] == int(index):
                worker.in_flight.popleft()
                verdicts[int(index)] = verdict == b"1"
            worker.deadline = time.monotonic() + self.timeout if worker.in_flight else math.inf

    def _replace(self, worker: _Worker, todo: deque[list[int]], poller: select.poll,
                 by_fd: dict[int, _Worker], reason: str) -> None:
        """Kill ``worker``; its current item stays ``False``, the rest of its chunk is requeued."""
        if not worker.ready:
            code = worker.process.poll()
            raise RuntimeError(f"math-verify worker {reason} during startup (exit code {code})")
        poller.unregister(worker.fd)
        del by_fd[worker.fd]
        worker.kill()
        self.restarts += 1
        if len(worker.in_flight) > 1:
            todo.appendleft(list(worker.in_flight)[1:])
        fresh = self._spawn()
        self._workers[self._workers.index(worker)] = fresh
        poller.register(fresh.fd, select.POLLIN)
        by_fd[fresh.fd] = fresh

    def close(self) -> None:
        """Stop all workers: EOF for idle ones, SIGKILL for ones still starting or lingering."""
        with self._lock:
            for worker in self._workers:
                try:
                    worker.process.stdin.close()  # EOF: a ready worker exits at once
                except OSError:
                    pass
            for worker in self._workers:
                try:
                    worker.process.wait(timeout=2 if worker.ready else 0)
                except subprocess.TimeoutExpired:
                    pass
                worker.kill()
            self._workers.clear()

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
