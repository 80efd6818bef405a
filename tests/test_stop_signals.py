"""A stage stopped by SIGTERM or Ctrl-C ends with one line and exit 128 + the signal, on the single
process and on Ray, whose own SIGTERM handler would abort with a stack dump (docs/design.md,
"Outputs: nothing lost silently")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cluster import runtime
from pipeline.config import load_config
from stages.common import stopped_line

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage, continues", [
    ("run", "its finished stages and RL's last checkpoint are kept: run the same command again to continue"),
    ("eval", "it did not finish: run it again"),
])
def test_the_stop_line_says_how_to_continue(stage, continues, tmp_path):
    line = stopped_line(f"rlvr {stage}", stage, signal.SIGTERM, load_config(None, [f"output_dir={tmp_path}"]))
    assert line == f"rlvr {stage}: stopped by SIGTERM; {continues}"


def test_the_stop_line_names_rls_checkpoint_or_says_there_is_none(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path}", "rl.save_every=10"])
    assert stopped_line("rlvr rl", "rl", signal.SIGINT, config) == (
        "rlvr rl: stopped by SIGINT; it saved no checkpoint yet (rl.save_every=10): --resume starts it again "
        "from step 0")
    checkpoint = tmp_path / "rl" / "checkpoint-10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.pt").write_bytes(b"")
    (tmp_path / "rl" / "latest").write_text("checkpoint-10")
    assert stopped_line("rlvr rl", "rl", signal.SIGTERM, config) == (
        f"rlvr rl: stopped by SIGTERM; its last checkpoint, {checkpoint}, is kept: continue with --resume")


def test_the_stages_sigterm_handler_outlives_what_ray_init_installs():
    def stage_handler(signum, frame):
        raise AssertionError("not called")

    before = signal.signal(signal.SIGTERM, stage_handler)
    try:
        with runtime._sigterm_kept():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init's crash reporter replaces it
        assert signal.getsignal(signal.SIGTERM) is stage_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def _stop_rl_run(tmp_path: Path, model: Path, problems: Path, signum: int, marker: str,
                 *overrides: str) -> tuple[int, str]:
    """Start `rlvr rl` on the tiny model, send `signum` once `marker` is logged; its exit status and output."""
    log = tmp_path / "output.txt"
    argv = [sys.executable, "-m", "stages.cli", "rl", f"model.name={model}", f"output_dir={tmp_path / 'run'}",
            f"data.train={problems}", f"data.test={problems}", "rl.steps=200", "rl.prompts_per_step=2",
            "rl.levels=null", "data.levels=null", "rl.group_size=4", "rl.mini_batch_size=8",
            "rl.micro_batch_size=4", "rl.eval_every=0", "rl.save_every=1", "rollout.max_tokens=8",
            "rollout.engine=hf", "reward.workers=1", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    with log.open("w") as output:
        # SIGINT as a terminal delivers it: a background job (make test &, nohup) starts with it ignored
        process = subprocess.Popen(argv, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while marker not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, f"the run ended before {marker!r}: " + log.read_text()[-2000:]
        process.send_signal(signum)
        code = process.wait(timeout=120)
    return code, log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signum, marker, overrides, kept", [
    (signal.SIGTERM, "step 1 |", (), "its last checkpoint, "),
    (signal.SIGINT, "step 1 |", (), "its last checkpoint, "),
    # on a private Ray, whose own handler would abort: while an update runs or the learner waits for a
    # rollout (`ray.wait`), and while the rollout worker starts (`ray.get`), before any checkpoint
    (signal.SIGTERM, "step 1 |", ("rl.max_staleness=1",), "its last checkpoint, "),
    (signal.SIGTERM, "pipeline.cluster.runtime: ray:", ("rl.max_staleness=1",), "it saved no checkpoint yet"),
])
def test_a_stopped_rl_run_ends_with_one_line(tmp_path, tiny_fp32_model_dir, problems_file, signum, marker,
                                             overrides, kept):
    code, output = _stop_rl_run(tmp_path, tiny_fp32_model_dir, problems_file, signum, marker, *overrides)
    name = signal.Signals(signum).name
    assert code == 128 + signum, output[-3000:]
    last = output.rstrip().splitlines()[-1]
    assert last.startswith(f"rlvr rl: stopped by {name}; {kept}"), output[-3000:]
    assert "Traceback" not in output and "received at time" not in output
