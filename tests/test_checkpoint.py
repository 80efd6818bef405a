"""Atomic checkpoints and the metrics record."""

import json
import random

import torch

from pipeline.checkpoint import latest_checkpoint, load_state, save_checkpoint
from pipeline.tracking import MetricsWriter, console_line, plot_metrics, read_metrics


class _Saveable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(3.0))

    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "weights.pt")


def test_save_and_load_round_trip_restores_rng(tmp_path):
    model = _Saveable()
    random.seed(1)
    torch.manual_seed(1)
    save_checkpoint(tmp_path, 3, model, {"stream": {"epoch": 0, "position": 24}})
    expected = (random.random(), torch.rand(2))
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "checkpoint-3"
    state = load_state(ckpt)
    assert state["step"] == 3 and state["stream"]["position"] == 24
    assert (random.random(), torch.rand(2))[0] == expected[0]
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
