"""In-sandbox harness for the code reward (docs/algorithms.md §7, code); stdlib only.

Started by ``rewards.sandbox`` as ``[unshare ...] python -I _sandbox_harness.py``
with a JSON payload on stdin. While still privileged it makes the filesystem
private (tmpfs over world-writable dirs, a fresh work dir, the interpreter's
files exposed to the sandbox uid), then drops to the sandbox uid (or drops all
capabilities when there is no uid to drop to). Each run forks a child that sets
resource limits, redirects stdin/stdout, lifts CPython's int/str digit limit (as
judges do) and executes the untrusted code in its own process group, so a crash
or hang in one run cannot fail the others. A run is one of

* ``{"stdin": text}``: the program reads ``text``; its stdout is the result;
* ``{"test_code": code}``: the program, then ``code`` in the same namespace;
* ``{"args": [...]}``: the program, then one call ``fn_name(*args)`` (a
  ``Solution().fn_name`` method if the program defines ``class Solution``);
  the return value comes back JSON-encoded (tuples and sets as lists).

Writes ``{"runs": [[status, stdout, value], ...]}`` to stdout; status is ``ok``,
``error``, ``timeout``, ``output_limit`` or ``skipped``. Verdicts on outputs are
made by the trainer, never here.
"""

import builtins
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

_LIBC = ctypes.CDLL(None, use_errno=True)
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC = 0x2, 0x4, 0x1000, 0x4000
_PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 4, 24, 36, 38
_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_WORK_DIR = "/tmp/work"


def _mount(source, target, fstype, flags, data=None):
    encode = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _LIBC.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _interpreter_paths():
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(os.path.realpath(p) for p in paths)


def _first_closed_dir(path):
    """``(dir, child)``: the first directory on ``path`` that others cannot search."""
    parts = path.strip("/").split("/")
    for depth in range(len(parts)):
        directory = "/" + "/".join(parts[:depth])
        if not os.stat(directory).st_mode & 0o001:
            return directory, parts[depth]
    return None


def _expose_interpreter():
    """Make the interpreter's files reachable for an unprivileged uid: a closed dir
    (e.g. ``/root``) is covered by an open tmpfs holding bind mounts of just the needed children."""
    for _ in range(8):  # each pass opens one more level of closed directories
        closed = {}
        for path in _interpreter_paths():
            found = _first_closed_dir(path)
            if found:
                closed.setdefault(found[0], set()).add(found[1])
        if not closed:
            return
        for directory, children in closed.items():
            _cover_with_tmpfs(directory, children, "mode=0755,size=1m")


def _cover_with_tmpfs(directory, keep, options):
    """Mount a fresh tmpfs over `directory`, with its children named in `keep` bound back in."""
    handles = {c: os.open(os.path.join(directory, c), os.O_PATH) for c in keep}
    _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for child, handle in handles.items():
        target = os.path.join(directory, child)
        os.mkdir(target)
        _mount(f"/proc/self/fd/{handle}", target, None, _MS_BIND | _MS_REC)
        os.close(handle)


def _private_filesystem(uid):
    if uid is not None:
        _expose_interpreter()
    needed = _interpreter_paths()
    for directory in _WORLD_WRITABLE:
        if os.path.isdir(directory):  # an interpreter under /tmp (a venv there) is bound back in
            keep = {p[len(directory) + 1:].split("/")[0] for p in needed if p.startswith(directory + "/")}
            _cover_with_tmpfs(directory, keep, "mode=1777,size=64m")
    os.mkdir(_WORK_DIR, 0o700)
    if uid is not None:
        os.chown(_WORK_DIR, uid, uid)
    os.chdir(_WORK_DIR)


def _drop_privileges(uid):
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # clears all capabilities
        return
    for cap in range(64):  # no uid to drop to: empty the bounding set, then the current sets
        _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _LIBC.capset(header, (ctypes.c_uint32 * 6)())


def _jsonable(value):
    """``json.dumps`` default: sets as (sorted where possible) lists, other objects as their repr."""
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    return repr(value)


def _call(namespace, fn_name, args):
    """``fn_name(*args)``: a ``Solution`` method (LeetCode style) if there is one, else the function."""
    solution = namespace.get("Solution")
    if isinstance(solution, type) and hasattr(solution, fn_name):
        return getattr(solution(), fn_name)(*args)
    return namespace[fn_name](*args)


def _child(code, run, fn_name, marker, limits, fds):
    """Runs in the forked child: limits, redirections, then the untrusted code. Never returns."""
    completed, value = False, ""
    stdio = "stdin" in run
    try:
        os.setpgid(0, 0)
        stdin_fd, out_fd, result_fd = fds
        os.dup2(stdin_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        os.dup2(result_fd, 3)
        os.closerange(4, 1 << 20)
        for name, limit in limits:
            resource.setrlimit(name, limit)
        _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        sys.set_int_max_str_digits(0)  # judges run without CPython's 4300-digit int/str limit
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.argv = ["solution.py"]
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        try:
            exec(compile(code, "solution.py", "exec"), namespace)
            completed = stdio
        except SystemExit as exit_:  # fine for a stdin/stdout program, never before the tests or call run
            completed = stdio and exit_.code in (None, 0)
        if "test_code" in run:
            try:
                exec(compile(run["test_code"], "tests.py", "exec"), namespace)
                completed = True
            except SystemExit as exit_:
                completed = exit_.code in (None, 0, False)
        elif "args" in run:
            value = json.dumps(_call(namespace, fn_name, run["args"]), default=_jsonable)
            completed = True
        sys.stdout.flush()
    except BaseException:
        completed = False
        traceback.print_exc()
    finally:
        if completed and not stdio:
            # proves the tests or the call ran to the end (an early os._exit cannot)
            os.write(3, (marker + value).encode("utf-8", errors="replace"))
        os._exit(0 if completed else 1)


def _read_until_exit(pid, out_r, deadline, max_output):
    """The child's stdout until it exits: ``(None, output)``, or ``("timeout"|"output_limit", b"")``."""
    pidfd = os.pidfd_open(pid)
    chunks, size, watched = [], 0, [out_r, pidfd]
    try:
        while pidfd in watched:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", b""
            for fd in select.select(watched, [], [], remaining)[0]:
                data = os.read(fd, 1 << 16) if fd == out_r else b""
                size += len(data)
                if size > max_output:
                    return "output_limit", b""
                chunks.append(data)
                if not data:  # EOF on stdout, or the child exited
                    watched.remove(fd)
        os.set_blocking(out_r, False)  # drain what the child wrote just before exiting
        try:
            while data := os.read(out_r, 1 << 16):
                size += len(data)
                if size > max_output:
                    return "output_limit", b""
                chunks.append(data)
        except BlockingIOError:
            pass
        return None, b"".join(chunks)
    finally:
        os.close(pidfd)


def _kill_leftovers():
    """Kill and reap every process left below the harness. As a child subreaper (or the init of
    its PID namespace) it inherits all orphans, even those that called setsid(); reaping them also
    frees their RLIMIT_NPROC slots before the next run."""
    me = str(os.getpid())
    while True:
        children = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[1] == me:
                        children.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
        if not children:
            return
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _read_file(fd, limit):
    """Up to ``limit + 1`` bytes of the file ``fd`` from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, size = [], 0
    while size <= limit and (data := os.read(fd, min(1 << 16, limit + 1 - size))):
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def _run_one(run, config):
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, run.get("stdin", "").encode("utf-8", errors="replace"))
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    result_fd = os.memfd_create("result")
    cpu = int(config["timeout"]) + 1
    memory = config["memory_mb"] * 2**20
    limits = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (memory, memory)),
              (resource.RLIMIT_FSIZE, (16 * 2**20,) * 2), (resource.RLIMIT_NOFILE, (64, 64)),
              (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NPROC, (config["max_processes"],) * 2)]
    pid = os.fork()
    if pid == 0:
        _child(config["code"], run, config["fn_name"], config["marker"], limits, (stdin_fd, out_w, result_fd))
    for fd in (stdin_fd, out_w):
        os.close(fd)
    deadline = time.monotonic() + config["timeout"]
    status, output = _read_until_exit(pid, out_r, deadline, config["max_output_bytes"])
    try:
        os.killpg(pid, signal.SIGKILL)  # the child if still running, and whatever it left in its group
    except ProcessLookupError:
        pass
    exit_code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    _kill_leftovers()
    marker = config["marker"].encode()
    result = _read_file(result_fd, len(marker) + config["max_output_bytes"])
    os.close(out_r)
    os.close(result_fd)
    if status is None and len(result) > len(marker) + config["max_output_bytes"]:
        status = "output_limit"
    if status is None:
        passed = exit_code == 0 and ("stdin" in run or result.startswith(marker))
        status = "ok" if passed else "error"
    value = result[len(marker):].decode("utf-8", errors="replace") if status == "ok" else ""
    return [status, output.decode("utf-8", errors="replace"), value]


def main():
    config = json.loads(sys.stdin.buffer.read())
    _LIBC.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # same-uid code cannot open /proc/<harness>/fd
    _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of the runs are re-parented to us
    if config["private_mounts"]:
        _private_filesystem(config["uid"])
    _drop_privileges(config["uid"])
    os.environ["HOME"] = os.getcwd()
    budget_end = time.monotonic() + config["total_timeout"]
    runs = []
    for run in config["runs"]:
        if time.monotonic() >= budget_end:
            runs.append(["skipped", "", ""])
            continue
        runs.append(_run_one(run, config))
    sys.stdout.buffer.write(json.dumps({"runs": runs}).encode())
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
