"""Code sandbox attacks: reward 0, trainer unharmed, nothing left running (docs/algorithms.md §7, code)."""

import os
import secrets
import shutil
import socket
import time
from pathlib import Path

import pytest

import rewards
import rewards.sandbox
from rewards.sandbox import Sandbox


def _fence(code: str) -> str:
    return f"```python\n{code}\n```"


def _descendants() -> list[int]:
    """PIDs whose parent chain leads to this test process (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
        found.extend(frontier)
    return found


def _sandbox_uid_processes() -> list[int]:
    """Processes running as one of the sandbox's unprivileged uids."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            uid = int((entry / "status").read_text().split("\nUid:")[1].split()[0])
        except (OSError, IndexError):
            continue
        if 1_600_000_000 <= uid < 1_600_000_000 + 65536:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def confined():
    if Sandbox().isolation.name == "none":  # a broken sandbox must not get the chance to hurt the machine
        pytest.skip("no process confinement available: attack tests skipped")


@pytest.fixture(scope="module")
def code_reward(confined):
    return rewards.get("code", timeout=1.0, workers=2, allow_unsandboxed=True)  # `uid` confines too


@pytest.fixture(autouse=True)
def nothing_left_running():
    before = set(_descendants())
    yield
    assert set(_descendants()) - before == set()
    assert _sandbox_uid_processes() == []


def test_strongest_isolation_is_used_here():
    level = Sandbox().isolation
    if os.geteuid() == 0 and shutil.which("unshare"):
        assert level.name == "namespaces+uid"
    else:
        assert level.name in {"userns", "uid", "none"}


def test_infinite_loop_is_killed(code_reward):
    start = time.monotonic()
    assert code_reward([_fence("while True:\n    pass")], tests=[[{"input": "", "output": "1"}]]) == [0.0]
    assert time.monotonic() - start < 8


def test_forking_children_is_bounded_and_cleaned_up(code_reward):
    # ~200 sleeping children that even leave the session; never an unbounded fork bomb.
    # The test passes only if every fork succeeded.
    code = ("import os, time\nforked = 0\nfor _ in range(200):\n    if os.fork() == 0:\n"
            "        os.setsid()\n        time.sleep(30)\n        os._exit(0)\n    forked += 1\nprint(forked)")
    assert code_reward([_fence(code)], tests=[[{"input": "", "output": "200"}]]) == [0.0]


def test_leftovers_of_one_run_do_not_starve_the_next(confined):
    code = ("import os, time\nforked = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
            "            time.sleep(30)\n            os._exit(0)\n        forked += 1\nexcept OSError:\n    pass\n"
            "print(forked)")
    first, second = Sandbox(timeout=2.0).run(code, inputs=["", ""])
    assert first.ok and second.ok
    assert 0 < int(first.stdout) == int(second.stdout) < 200


def test_huge_allocation_fails(code_reward):
    code = "x = bytearray(100 * 2**30)\nprint('allocated')"
    assert code_reward([_fence(code)], tests=[[{"input": "", "output": "allocated"}]]) == [0.0]


def test_writes_outside_work_dir_do_not_land(code_reward):
    name = f"rlvr_escape_{secrets.token_hex(6)}"
    code = (f"import os\nfor path in ['/tmp/{name}', '../{name}', '../../{name}', '/root/{name}']:\n"
            "    try:\n        open(path, 'w').write('x')\n    except OSError:\n        pass\n"
            "open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())")
    assert code_reward([_fence(code)], tests=[[{"input": "", "output": "ok"}]]) == [1.0]
    assert not any(Path(d, name).exists() for d in ["/tmp", "/", "/root", "/var/tmp"])


@pytest.mark.parametrize("address", [("127.0.0.1", 0), ("1.1.1.1", 53)])
def test_network_is_unreachable(code_reward, address):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        target = listener.getsockname() if address[1] == 0 else address
        code = (f"import socket\ns = socket.socket()\ns.settimeout(0.5)\ns.connect({tuple(target)!r})\n"
                "print('connected')")
        assert code_reward([_fence(code)], tests=[[{"input": "", "output": "connected"}]]) == [0.0]


def test_secrets_in_environment_are_invisible(code_reward, monkeypatch):
    secret = secrets.token_hex(8)
    monkeypatch.setenv("RLVR_TEST_SECRET", secret)
    code = ("import os\nfound = os.environ.get('RLVR_TEST_SECRET', '')\n"
            "for pid in os.listdir('/proc'):\n    try:\n"
            "        found += open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace')\n"
            "    except Exception:\n        pass\n"
            f"print('visible' if {secret!r} in found else 'hidden')")
    assert code_reward([_fence(code)], tests=[[{"input": "", "output": "visible"}]]) == [0.0]
    assert code_reward([_fence(code)], tests=[[{"input": "", "output": "hidden"}]]) == [1.0]


def test_signalling_the_parent_and_the_trainer(code_reward):
    # each program prints "gone" only if its target died; the expected output is "gone"
    me = os.getpid()
    parent = ("import os, signal, time\nparent = os.getppid()\nos.kill(parent, signal.SIGKILL)\n"
              "time.sleep(0.2)\nprint('gone' if os.getppid() != parent else 'alive')")
    trainer = (f"import os, signal\ntry:\n    os.kill({me}, signal.SIGKILL)\n    print('gone')\n"
               "except OSError:\n    print('denied')")
    scores = code_reward([_fence(parent), _fence(trainer)], tests=[[{"input": "", "output": "gone"}]] * 2)
    assert scores == [0.0, 0.0]
    assert os.getpid() == me  # still here


def test_fallback_level_still_runs_code():
    sandbox = Sandbox(timeout=1.0, isolation="none")
    runs = sandbox.run("print(int(input()) * 3)", inputs=["2", "oops"])
    assert [(r.status, r.stdout.strip()) for r in runs] == [("ok", "6"), ("error", "")]
    assert sandbox.run("while True: pass", inputs=[""])[0].status == "timeout"


def test_calls_return_json_values():
    code = "class Solution:\n    def pair(self, x):\n        return (x, {x})\n\ndef boom(x):\n    raise ValueError(x)"
    runs = Sandbox(timeout=2.0).run(code, call=("pair", [[1], ["a"]]))
    assert [(r.status, r.value) for r in runs] == [("ok", '[1, [1]]'), ("ok", '["a", ["a"]]')]
    assert [(r.status, r.value) for r in Sandbox(timeout=2.0).run(code, call=("boom", [[1]]))] == [("error", "")]
    with pytest.raises(ValueError, match="exactly one"):
        Sandbox().run(code, inputs=[""], call=("pair", [[1]]))


def test_test_programs_run_one_each():
    runs = Sandbox(timeout=2.0).run("x = 2", test_code=["assert x == 2", "assert x == 3", "print(x)"])
    assert [r.status for r in runs] == ["ok", "error", "ok"]
    assert runs[2].stdout == "2\n"


def test_int_str_digit_limit_is_lifted():
    (run,) = Sandbox(timeout=2.0).run("n = int(input())\nprint(len(str(n * 10 ** 5000)))", inputs=["7" * 5000])
    assert (run.status, run.stdout) == ("ok", "10000\n")


def test_probe_falls_back_level_by_level(monkeypatch, caplog):
    broken = rewards.sandbox.Isolation("broken", ("/bin/false",), False, False)
    none = rewards.sandbox.Isolation("none", (), False, False)
    monkeypatch.setattr(rewards.sandbox, "isolation_levels", lambda: [broken, none])
    assert Sandbox().isolation == none
    assert "stronger levels ['broken'] failed" in caplog.text
