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
from stages.common import stopped_line

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage, continues", [
    ("rl", "its last finished checkpoint is kept: continue with --resume"),
    ("run", "run the same command again to continue"),
    ("eval", "it did not finish: run it again"),
])
def test_the_stop_line_says_how_to_continue(stage, continues):
    line = stopped_line(f"rlvr {stage}", stage, signal.SIGTERM)
    assert line.startswith(f"rlvr {stage}: stopped by SIGTERM; ") and line.endswith(continues)


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


def _stop_rl_run(tmp_path: Path, model: Path, problems: Path, signum: int, *overrides: str) -> tuple[int, str]:
    """Start `rlvr rl` on the tiny model, send `signum` once step 1 is logged; its exit status and output."""
    log = tmp_path / "output.txt"
    argv = [sys.executable, "-m", "stages.cli", "rl", f"model.name={model}", f"output_dir={tmp_path / 'run'}",
            f"data.train={problems}", f"data.test={problems}", "rl.steps=200", "rl.prompts_per_step=2",
            "rl.levels=null", "data.levels=null", "rl.group_size=4", "rl.mini_batch_size=8", "rl.micro_batch_size=4", "rl.eval_every=0",
            "rl.save_every=1", "rollout.max_tokens=8", "rollout.engine=hf", "reward.workers=1", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    with log.open("w") as err:
        process = subprocess.Popen(argv, cwd=REPO, stdout=err, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 240
        while "step 1 |" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert process.poll() is None, "the run ended before step 1: " + log.read_text()[-2000:]
        process.send_signal(signum)
        code = process.wait(timeout=120)
    return code, log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signum, overrides", [
    (signal.SIGTERM, ()),
    (signal.SIGINT, ()),
    (signal.SIGTERM, ("rl.max_staleness=1",)),  # on a private Ray, whose handler would abort
])
def test_a_stopped_rl_run_ends_with_one_line_and_its_checkpoint(tmp_path, tiny_fp32_model_dir, problems_file,
                                                                signum, overrides):
    code, output = _stop_rl_run(tmp_path, tiny_fp32_model_dir, problems_file, signum, *overrides)
    name = signal.Signals(signum).name
    assert code == 128 + signum, output[-2000:]
    assert f"rlvr rl: stopped by {name}; its last finished checkpoint is kept: continue with --resume" in output
    assert "Traceback" not in output and "received at time" not in output
    assert (tmp_path / "run" / "rl" / "latest").exists()
