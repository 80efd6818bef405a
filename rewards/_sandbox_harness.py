"""In-sandbox harness for the code reward (docs/algorithms.md §7, code); stdlib only.

Started by ``rewards.sandbox`` as ``[unshare ...] python -I _sandbox_harness.py``
with a JSON payload on stdin. While still privileged it makes the filesystem
private (tmpfs over world-writable dirs, a fresh work dir, the interpreter's
files exposed to the sandbox uid), then drops to the sandbox uid (or drops all
capabilities when there is no uid to drop to). Each run forks a child that sets
resource limits, redirects stdin/stdout, and executes the untrusted code in
its own process group, so a crash or hang in one run cannot fail the others.
Writes ``{"runs": [[status, stdout], ...]}`` to stdout; status is ``ok``,
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


def _child(code, test_code, marker, limits, fds):
    """Runs in the forked child: limits, redirections, then the untrusted code. Never returns."""
    completed = False
    try:
        os.setpgid(0, 0)
        stdin_fd, out_fd, marker_fd = fds
        os.dup2(stdin_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        os.dup2(marker_fd, 3)
        os.closerange(4, 1 << 20)
        for name, value in limits:
            resource.setrlimit(name, value)
        _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
        sys.argv = ["solution.py"]
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        try:
            exec(compile(code, "solution.py", "exec"), namespace)
            completed = test_code is None
        except SystemExit as exit_:  # fine for a stdin/stdout program, never before the tests run
            completed = test_code is None and exit_.code in (None, 0)
        if test_code is not None:
            try:
                exec(compile(test_code, "tests.py", "exec"), namespace)
                completed = True
            except SystemExit as exit_:
                completed = exit_.code in (None, 0, False)
        sys.stdout.flush()
    except BaseException:
        completed = False
        traceback.print_exc()
    finally:
        if completed and test_code is not None:
            os.write(3, marker.encode())  # proves the tests ran to the end (an early os._exit cannot)
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


def _run_one(stdin_text, config):
    stdin_fd = os.memfd_create("stdin")
    os.write(stdin_fd, stdin_text.encode("utf-8", errors="replace"))
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe()
    marker_r, marker_w = os.pipe()
    cpu = int(config["timeout"]) + 1
    memory = config["memory_mb"] * 2**20
    limits = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (memory, memory)),
              (resource.RLIMIT_FSIZE, (16 * 2**20,) * 2), (resource.RLIMIT_NOFILE, (64, 64)),
              (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NPROC, (config["max_processes"],) * 2)]
    pid = os.fork()
    if pid == 0:
        _child(config["code"], config["test_code"], config["marker"], limits, (stdin_fd, out_w, marker_w))
    for fd in (stdin_fd, out_w, marker_w):
        os.close(fd)
    deadline = time.monotonic() + config["timeout"]
    status, output = _read_until_exit(pid, out_r, deadline, config["max_output_bytes"])
    try:
        os.killpg(pid, signal.SIGKILL)  # the child if still running, and whatever it left in its group
    except ProcessLookupError:
        pass
    exit_code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    _kill_leftovers()
    os.set_blocking(marker_r, False)
    try:
        marker = os.read(marker_r, 256).decode(errors="replace")
    except BlockingIOError:
        marker = ""
    os.close(out_r)
    os.close(marker_r)
    if status is None:
        passed = exit_code == 0 and (config["test_code"] is None or marker == config["marker"])
        status = "ok" if passed else "error"
    return [status, output.decode("utf-8", errors="replace")]


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
    for stdin_text in config["inputs"]:
        if time.monotonic() >= budget_end:
            runs.append(["skipped", ""])
            continue
        runs.append(_run_one(stdin_text, config))
    sys.stdout.buffer.write(json.dumps({"runs": runs}).encode())
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
