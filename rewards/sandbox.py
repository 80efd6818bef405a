"""Sandboxed execution of untrusted Python for the code reward (docs/algorithms.md §7, code).

Each call starts one process tree, never code in the trainer's process:
``[unshare ...] python -I _sandbox_harness.py`` in a new session, a fresh
temporary directory (deleted afterwards) and a minimal environment (no
inherited secrets). Isolation levels, the strongest that works is chosen once
per process by running a smoke test (weaker ones log a warning):

* ``namespaces+uid`` (root): new mount, network and PID namespaces via
  util-linux ``unshare``; tmpfs over world-writable dirs; the code runs under a
  fresh unprivileged uid (so ``RLIMIT_NPROC`` binds) with no network at all;
  when the namespace's init exits every process in it dies.
* ``userns`` (non-root): the same namespaces inside a user namespace; no uid
  change, capabilities dropped.
* ``uid`` (root without ``unshare``): unprivileged uid, no namespaces.
* ``none``: resource limits only.

``NAMESPACE_LEVELS`` names the levels that confine files and network; the code
reward refuses to start below them unless the user opts in.

Per run the harness forks a child with RLIMIT_CPU/AS/FSIZE/NOFILE/NPROC/CORE and
a wall-clock limit (the limits are set in the harness, not via ``preexec_fn``,
which is unsafe with the trainer's threads). Afterwards the whole tree is killed:
the process group, then any process left in the session or running as the
sandbox uid (found via /proc).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = ["NAMESPACE_LEVELS", "Isolation", "RunResult", "Sandbox", "isolation_levels"]

logger = logging.getLogger(__name__)

_HARNESS = str(Path(__file__).with_name("_sandbox_harness.py"))
_STARTUP_GRACE = 5.0  # seconds for namespaces + interpreter start, beyond the runs' own limits
_NAMESPACE_FLAGS = ("--mount", "--net", "--pid", "--fork", "--mount-proc", "--kill-child")
NAMESPACE_LEVELS = ("namespaces+uid", "userns")
"""Isolation levels with private mount, network and PID namespaces."""


@dataclass(frozen=True)
class Isolation:
    """How a sandbox is confined: a command prefix plus what the harness does inside."""

    name: str
    command_prefix: tuple[str, ...]
    private_mounts: bool
    drop_uid: bool


@dataclass(frozen=True)
class RunResult:
    """One run: ``status`` is ok | error | timeout | output_limit | skipped | crashed; ``value``:
    the JSON text of a call's return value (``""`` for other runs and failed calls)."""

    status: str
    stdout: str
    value: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def isolation_levels() -> list[Isolation]:
    """Candidate isolation levels for this machine, strongest first."""
    unshare = shutil.which("unshare")
    levels = []
    if os.geteuid() == 0:
        if unshare:
            levels.append(Isolation("namespaces+uid", (unshare, *_NAMESPACE_FLAGS), True, True))
        levels.append(Isolation("uid", (), False, True))
    elif unshare:
        levels.append(Isolation("userns", (unshare, "--user", "--map-root-user", *_NAMESPACE_FLAGS), True, False))
    levels.append(Isolation("none", (), False, False))
    return levels


class _UidPool:
    """Unprivileged uids, one per concurrent sandbox, so no two sandboxes share a uid."""

    def __init__(self, first: int = 1_600_000_000, size: int = 65536) -> None:
        self._first, self._size, self._next = first, size, 0
        self._in_use: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            while (uid := self._first + self._next % self._size) in self._in_use:
                self._next += 1
            self._next += 1
            self._in_use.add(uid)
            return uid

    def release(self, uid: int) -> None:
        with self._lock:
            self._in_use.discard(uid)


_uids = _UidPool()
_chosen: dict[tuple[str, tuple[Isolation, ...]], Isolation] = {}  # (requested, candidates) -> level
_choose_lock = threading.Lock()


def _minimal_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home,
            "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _leftovers(session: int, uid: int | None) -> list[int]:
    """Live processes in ``session`` or running as ``uid`` (read from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in Path(entry.path, "status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if fields.get("State", "").strip().startswith("Z"):
            continue
        in_session = fields.get("NSsid", "-1").split()[0] == str(session)
        if in_session or (uid is not None and fields.get("Uid", "").split()[:1] == [str(uid)]):
            found.append(int(entry.name))
    return found


def _kill_tree(process: subprocess.Popen, uid: int | None) -> None:
    """SIGKILL the sandbox's process group, then anything left in its session or under its uid."""
    for _ in range(50):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        victims = [pid for pid in _leftovers(process.pid, uid) if pid != os.getpid()]
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        process.poll()
        time.sleep(0.01)
    logger.warning("sandbox processes survived SIGKILL: %s", victims)


class Sandbox:
    """Runs a Python program against stdin inputs or appended test code, confined as described above.

    ``timeout``: wall-clock seconds per run (CPU limit ``timeout + 1``); ``total_timeout``:
    budget for all runs of one call; ``memory_mb``: address-space limit per process;
    ``max_processes``: process/thread limit for the sandbox uid; ``isolation``: ``auto``
    (strongest working level) or a level name from ``isolation_levels()``.
    """

    def __init__(self, timeout: float = 5.0, total_timeout: float = 30.0, memory_mb: int = 1024,
                 max_processes: int = 16, max_output_bytes: int = 2 * 2**20, isolation: str = "auto") -> None:
        self.timeout, self.total_timeout = float(timeout), float(total_timeout)
        self.memory_mb, self.max_processes, self.max_output_bytes = memory_mb, max_processes, max_output_bytes
        names = [level.name for level in isolation_levels()]
        if isolation != "auto" and isolation not in names:
            raise ValueError(f"isolation {isolation!r} is not available here; valid: auto, {', '.join(names)}")
        self._requested = isolation

    @property
    def isolation(self) -> Isolation:
        """The isolation level in use: probed once per process and set of candidate levels."""
        levels = tuple(isolation_levels())
        with _choose_lock:
            if (self._requested, levels) not in _chosen:
                _chosen[self._requested, levels] = self._choose(levels)
            return _chosen[self._requested, levels]

    def _choose(self, levels: tuple[Isolation, ...]) -> Isolation:
        if self._requested != "auto":
            return next(level for level in levels if level.name == self._requested)
        probe = Sandbox(timeout=10.0, total_timeout=10.0)  # generous: a loaded machine must not weaken isolation
        for rank, level in enumerate(levels):
            for _ in range(2):
                smoke = probe._execute(level, "import fractions, statistics\nprint(int(input()) + 1)",
                                       [{"stdin": "41"}])
                if smoke[0].ok and smoke[0].stdout.strip() == "42":
                    if rank:
                        logger.warning("code sandbox: using isolation level %r; stronger levels %s failed here",
                                       level.name, [lv.name for lv in levels[:rank]])
                    return level
        raise RuntimeError("the code sandbox cannot run Python on this machine")

    def run(self, code: str, inputs: Sequence[str] | None = None, test_code: str | Sequence[str] | None = None,
            call: tuple[str, Sequence[list[Any]]] | None = None) -> list[RunResult]:
        """One result per run of ``code``, which is run once per stdin text in ``inputs``; or once
        followed by each program in ``test_code`` (a string is one program); or, with
        ``call=(fn_name, arg_lists)``, once per argument list, calling ``fn_name(*args)``."""
        if sum(x is not None for x in (inputs, test_code, call)) != 1:
            raise ValueError("Sandbox.run needs exactly one of inputs, test_code, call")
        if inputs is not None:
            runs = [{"stdin": text} for text in inputs]
        elif test_code is not None:
            runs = [{"test_code": t} for t in ([test_code] if isinstance(test_code, str) else test_code)]
        else:
            runs = [{"args": list(args)} for args in call[1]]
        return self._execute(self.isolation, code, runs, call[0] if call else None) if runs else []

    def _execute(self, level: Isolation, code: str, runs: list[dict[str, Any]],
                 fn_name: str | None = None) -> list[RunResult]:
        uid = _uids.acquire() if level.drop_uid else None
        workdir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
        try:
            if uid is not None:
                os.chown(workdir, uid, uid)
            payload = {"code": code, "runs": runs, "fn_name": fn_name, "marker": secrets.token_hex(16),
                       "timeout": self.timeout, "total_timeout": self.total_timeout, "memory_mb": self.memory_mb,
                       "max_processes": self.max_processes, "max_output_bytes": self.max_output_bytes,
                       "private_mounts": level.private_mounts, "uid": uid}
            wall = min(self.total_timeout + self.timeout, len(runs) * (self.timeout + 0.5)) + _STARTUP_GRACE
            process = subprocess.Popen([*level.command_prefix, sys.executable, "-I", _HARNESS],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       cwd=workdir, env=_minimal_env(workdir), start_new_session=True)
            try:
                output, _ = process.communicate(json.dumps(payload).encode(), timeout=wall)
            except subprocess.TimeoutExpired:
                output = b""
            finally:
                _kill_tree(process, uid)
                for pipe in (process.stdin, process.stdout):
                    try:
                        pipe.close()
                    except OSError:  # unflushed input to a dead process
                        pass
                process.wait()
            return _parse_runs(output, len(runs))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if uid is not None:
                _uids.release(uid)


def _parse_runs(output: bytes, expected: int) -> list[RunResult]:
    try:
        runs = [RunResult(str(status), str(stdout), str(value)) for status, stdout, value in json.loads(output)["runs"]]
    except (ValueError, KeyError, TypeError):
        runs = []
    return (runs + [RunResult("crashed", "")] * expected)[:expected]
