"""Sampled training completions (pipeline/core/tracking.py, like TRL's `log_completions`): rows, files,
TensorBoard's text tab, resume, and the rows of a real 2-step RL run on the tiny model; plus the
periodic evaluation's standard error in metrics.jsonl."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from pipeline.rollout import Completion
from pipeline.core.tracking import MetricsWriter, completion_rows, completions_markdown, console_line, read_metrics


class Ids:
    """Decodes ids as the characters they number."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


def _groups():
    def group(prompt, texts, rewards, accuracy):
        completions = [Completion(list(map(ord, prompt)), list(range(len(t))), [0.0] * len(t), t, "stop")
                       for t in texts]
        return SimpleNamespace(prompt_ids=list(map(ord, prompt)), completions=completions, rewards=rewards,
                               components={"accuracy": accuracy, "format": [1.0] * len(texts)})

    return [group("Q1?", ["a", "bb", "ccc"], [1.1, 0.1, 0.1], [1.0, 0.0, 0.0]),
            group("Q2?", ["dddd", "e", "ff"], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0])]


def test_rows_carry_prompt_completion_rewards_and_advantage():
    advantages = torch.tensor([1.2, -0.6, -0.6, -1.1, 0.55, 0.55])
    rows = completion_rows(7, _groups(), advantages, Ids(), count=6)
    assert [(r["group"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert rows[3] == {"step": 7, "group": 1, "sample": 0, "prompt": "Q2?", "completion": "dddd", "reward": 0.0,
                       "rewards": {"accuracy": 0.0, "format": 1.0}, "advantage": pytest.approx(-1.1),
                       "length": 4, "finish_reason": "stop"}
    # fewer than the batch: a seeded draw per step, the same on a rerun, in batch order
    two = completion_rows(7, _groups(), advantages, Ids(), count=2)
    assert len(two) == 2 and two == completion_rows(7, _groups(), advantages, Ids(), count=2)
    assert [r["group"] * 3 + r["sample"] for r in two] == sorted(r["group"] * 3 + r["sample"] for r in two)
    with pytest.raises(ValueError, match="5 advantages for 6 completions"):
        completion_rows(7, _groups(), advantages[:5], Ids(), count=2)


def test_per_token_advantages_are_averaged_over_the_completion():
    advantages = torch.zeros(6, 5)
    advantages[1, :2] = torch.tensor([1.0, 3.0])  # "bb": two tokens
    advantages[1, 2:] = 100.0  # padding beyond the completion is ignored
    rows = completion_rows(0, _groups(), advantages, Ids(), count=6)
    assert rows[1]["advantage"] == pytest.approx(2.0)


def test_writer_files_tensorboard_text_and_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    advantages = torch.tensor([1.2, -0.6, -0.6, -1.1, 0.55, 0.55])
    writer = MetricsWriter(tmp_path)
    for step in range(3):
        assert len(writer.log_completions(step, _groups(), advantages, Ids(), count=2)) == 2
    assert writer.log_completions(3, _groups(), advantages, Ids(), count=0) == []  # 0 = off
    writer.close()
    rows = read_metrics(tmp_path / "completions.jsonl")
    assert [r["step"] for r in rows] == [0, 0, 1, 1, 2, 2]
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    texts = events.Tensors("completions/text_summary")
    assert [t.step for t in texts] == [0, 1, 2]
    shown = texts[0].tensor_proto.string_val[0].decode()
    assert shown == completions_markdown(rows[:2]) and "advantage" in shown and "    Q" in shown

    MetricsWriter(tmp_path, resume_from_step=1).close()  # a resumed run drops what came after step 1
    assert [r["step"] for r in read_metrics(tmp_path / "completions.jsonl")] == [0, 0, 1, 1]
    MetricsWriter(tmp_path).close()  # a fresh run starts the file anew
    assert not (tmp_path / "completions.jsonl").exists()


def test_console_line_shows_the_standard_error():
    line = console_line({"step": 4, "reward/mean": 0.5, "eval/accuracy": 0.25, "eval/accuracy_stderr": 0.0625})
    assert line == "step 4 | reward 0.500 | eval 0.250 ± 0.062"


@pytest.mark.slow
def test_two_step_rl_run_logs_completions_and_eval_stderr(tiny_model_dir, tmp_path, monkeypatch):
    import pipeline.rl.trainer
    import stages.rl
    from pipeline.config import load_config

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(8)))
    config = load_config(None, [
        f"model.name={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", f"data.train={data}", f"data.test={data}",
        "rollout.engine=hf", "rl.steps=2", "rl.prompts_per_step=2", "rl.group_size=4", "rl.mini_batch_size=8",
        "rl.micro_batch_size=8", "rl.eval_every=2", "rl.eval_problems=3", "rl.eval_samples=2",
        "rollout.max_tokens=8", "reward.workers=1", "rl.bf16_autocast=false", "rl.log_completions=3"])
    calls = []  # (advantages, rewards) of each step's advantage computation, in order

    def keep(algo, inputs):
        result = real(algo, inputs)
        calls.append((result.advantages.clone(), inputs.rewards.clone()))
        return result

    real = pipeline.rl.trainer.compute_advantages
    monkeypatch.setattr(pipeline.rl.trainer, "compute_advantages", keep)
    stages.rl.run(config)

    rows = read_metrics(tmp_path / "run" / "rl" / "completions.jsonl")
    assert [r["step"] for r in rows] == [0, 0, 0, 1, 1, 1]  # steps with an update; 3 each
    assert len(calls) == 2
    for row in rows:
        advantages, rewards = calls[row["step"]]
        i = row["group"] * 4 + row["sample"]
        assert row["advantage"] == pytest.approx(float(advantages[i]))
        assert row["reward"] == pytest.approx(float(rewards[i]))
        assert set(row["rewards"]) == {"accuracy", "format"}
        assert row["reward"] == pytest.approx(row["rewards"]["accuracy"] + 0.1 * row["rewards"]["format"])
        assert "What is" in row["prompt"] and isinstance(row["completion"], str) and row["length"] <= 8
    records = read_metrics(tmp_path / "run" / "rl" / "metrics.jsonl")
    evaluated = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in evaluated] == [0, 2]
    for r in evaluated:  # SE over the 3 held-out problems of per-problem accuracy (2 samples each)
        assert isinstance(r["eval/accuracy_stderr"], float) and 0.0 <= r["eval/accuracy_stderr"] <= 0.5


def test_a_term_that_did_not_apply_is_logged_as_none():
    # a reward may return None for a sample (TRL's "not applicable"); the log keeps it as null
    from types import SimpleNamespace

    import torch

    from pipeline.core.tracking import completion_rows, completions_markdown

    completion = SimpleNamespace(text="4", token_ids=[1, 2], finish_reason="stop")
    group = SimpleNamespace(prompt_ids=[5], completions=[completion, completion], rewards=[1.0, 0.0],
                            components={"accuracy": [1.0, 0.0], "mine": [None, 0.5]})
    tokenizer = SimpleNamespace(decode=lambda ids, skip_special_tokens=False: "prompt")
    rows = completion_rows(0, [group], torch.tensor([1.0, -1.0]), tokenizer, 2)
    assert sorted(row["rewards"]["mine"] is None for row in rows) == [False, True]
    assert "mine n/a" in completions_markdown(rows)
