"""Atomic checkpoints and the metrics record."""

import json
import os

import torch

import pytest

from pipeline.core.checkpoint import checkpoint_run, latest_checkpoint, load_state, save_checkpoint, save_final
from pipeline.core.tracking import MetricsWriter, console_line, plot_metrics, read_metrics


class _Saveable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(3.0))

    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "weights.pt")


def test_save_and_load_round_trip(tmp_path):
    model = _Saveable()
    save_checkpoint(tmp_path, 3, model, {"stream": {"epoch": 0, "position": 24}})
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "checkpoint-3"
    state = load_state(ckpt)
    assert state == {"stream": {"epoch": 0, "position": 24}, "step": 3}  # no RNG state: steps reseed
    assert (ckpt / "adapter" / "weights.pt").is_file()


def test_only_complete_checkpoints_are_read_and_old_ones_pruned(tmp_path):
    model = _Saveable()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    # A half-written folder from a killed run is never chosen: only `latest` names a checkpoint.
    (tmp_path / ".checkpoint-4-abc").mkdir()
    (tmp_path / "checkpoint-4").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-3"
    assert latest_checkpoint(tmp_path / "missing") is None


class _Tokenizer:
    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        (path / "tokenizer.json").write_text("{}")


def _steps(root):
    return sorted(int(p.name.split("-")[1]) for p in root.glob("checkpoint-*"))


def test_a_new_run_never_prunes_an_earlier_runs_checkpoints(tmp_path):
    """The issue's smallest case: steps 30 and 40 of an earlier run, then step 10 of a new one."""
    model = _Saveable()
    for step in (30, 40):
        save_checkpoint(tmp_path, step, model, {}, keep=2)
    new = save_checkpoint(tmp_path, 10, model, {}, keep=2, tokenizer=_Tokenizer())
    assert new.name == "checkpoint-10" and latest_checkpoint(tmp_path) == new
    assert {p.name for p in (new / "adapter").iterdir()} == {"weights.pt", "tokenizer.json"}
    assert _steps(tmp_path) == [10, 30, 40]
    assert checkpoint_run(new) != checkpoint_run(tmp_path / "checkpoint-40")  # step 10 after 40: a new run
    # The new run goes on: pruning removes its own old checkpoints only.
    for step in (20, 25):
        save_checkpoint(tmp_path, step, model, {}, keep=2)
    assert _steps(tmp_path) == [20, 25, 30, 40]


@pytest.mark.parametrize("keep, left", [(1, [4]), (3, [2, 3, 4]), (None, [1, 2, 3, 4])])
def test_keep_counts_this_runs_checkpoints(tmp_path, keep, left):
    model = _Saveable()
    save_checkpoint(tmp_path, 9, model, {}, run_id="other")
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, {}, keep=keep, run_id="mine")
    assert _steps(tmp_path) == sorted([*left, 9])
    assert checkpoint_run(tmp_path / "checkpoint-4") == "mine"


def test_checkpoints_without_a_run_id_are_never_pruned(tmp_path):
    (tmp_path / "checkpoint-1" / "adapter").mkdir(parents=True)  # written by an older version
    for step in (2, 3, 4):
        save_checkpoint(tmp_path, step, _Saveable(), {}, keep=1, run_id="mine")
    assert _steps(tmp_path) == [1, 4]


def test_a_failed_save_leaves_the_previous_checkpoint_and_latest(tmp_path):
    save_checkpoint(tmp_path, 1, _Saveable(), {}, run_id="mine")

    class _Broken(_Tokenizer):
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, _Saveable(), {}, run_id="mine", tokenizer=_Broken())
    assert latest_checkpoint(tmp_path).name == "checkpoint-1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(("checkpoint", "."))] == ["checkpoint-1"]


def test_final_folder_is_named_by_kind_and_replaced_whole(tmp_path):
    class _Peft(_Saveable):
        peft_config = {"default": None}

    adapter = save_final(tmp_path, _Peft(), _Tokenizer())
    assert adapter == tmp_path / "final" / "adapter"
    assert {p.name for p in adapter.iterdir()} == {"weights.pt", "tokenizer.json"}
    model = save_final(tmp_path, _Saveable(), _Tokenizer())  # full fine-tuning
    assert model == tmp_path / "final" / "model" and (model / "weights.pt").is_file()
    assert [p.name for p in (tmp_path / "final").iterdir()] == ["model"]
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no staging folder left behind


def test_metrics_writer_truncates_on_resume(tmp_path):
    writer = MetricsWriter(tmp_path)
    for step in range(4):
        writer.write({"step": step, "reward/mean": step / 10, "kl/mean": float("nan")})
    writer.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[0]["kl/mean"] is None  # NaN is not valid JSON; written as null
    MetricsWriter(tmp_path, resume_from_step=1).close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1]
    assert (tmp_path / "tensorboard").is_dir()


def test_console_line_and_plot(tmp_path):
    line = console_line({"step": 2, "reward/mean": 0.5, "eval/accuracy": 0.25, "time/step": 3.0})
    assert line == "step 2 | reward 0.500 | eval 0.250 | 3.0s"
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "reward/mean": s * 0.1}) + "\n" for s in range(3)))
    (png,) = plot_metrics(path, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finished_folders_get_the_mode_mkdir_would_give_them(tmp_path):
    """A checkpoint or model folder is readable by others as the umask allows (not tempfile's 0700)."""
    from pipeline.core.checkpoint import write_folder_atomic

    old = os.umask(0o022)
    try:
        folder = write_folder_atomic(tmp_path / "model", lambda staging: (staging / "weights").write_text("w"))
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755
