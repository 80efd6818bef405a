"""The RL stage end to end on the tiny model: presets, dynamic sampling, kill-and-resume, bad configs."""

import json

import pytest

import rewards
import stages.rl
from pipeline.config import load_config
from pipeline.core.tracking import read_metrics
from pipeline.rl.trainer import Group, Trainer, sample_groups
from canned_engine import CannedEngine

PRESETS = ["grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "sapo", "ppo", "reinforce", "rloo"]


def _config(tiny_model_dir, problems_file, tmp_path, *overrides):
    return load_config(None, [
        f"model.name={tiny_model_dir}", f"output_dir={tmp_path}", f"data.train={problems_file}",
        f"data.test={problems_file}", "rl.steps=2", "rl.prompts_per_step=2", "rl.group_size=4",
        "rl.mini_batch_size=8", "rl.micro_batch_size=4", "rl.eval_every=2", "rl.eval_problems=2",
        "rl.eval_samples=2", "rl.save_every=1", "rollout.max_tokens=12", "reward.workers=1",
        "rl.bf16_autocast=false", *overrides])


@pytest.mark.parametrize("reason, override, key", [
    ("unknown algorithm", "algorithm.preset=grpoo", "algorithm.preset"),
    ("a group of one", "rl.group_size=1", "rl.group_size"),
    ("batch not divisible", "rl.mini_batch_size=48", "rl.mini_batch_size"),
])
def test_bad_config_fails_before_any_model_loads(monkeypatch, capsys, reason, override, key):
    import pipeline.core.models

    monkeypatch.setattr(pipeline.core.models, "load_policy", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        stages.rl.main([override])
    assert key in str(exit_info.value), reason


@rewards.register("stub_text_parity")
def _text_parity(**_params):
    """1 for completions with an odd number of characters: random text gets varied rewards."""

    def reward(completions, **_columns):
        return [float(len(c) % 2) for c in completions]

    return reward


@pytest.fixture
def shared_engine(vllm_merged_engine, tiny_model_dir):
    """The session's vLLM engine, given back to later tests with the base weights."""
    from transformers import AutoModelForCausalLM

    yield vllm_merged_engine
    vllm_merged_engine.update_weights(AutoModelForCausalLM.from_pretrained(tiny_model_dir))


@pytest.mark.vllm
@pytest.mark.parametrize("preset", PRESETS)
def test_two_steps_through_vllm_for_each_preset(shared_engine, tiny_model_dir, problems_file, tmp_path, preset):
    config = _config(tiny_model_dir, problems_file, tmp_path, f"algorithm.preset={preset}",
                     "reward.terms=[{name: stub_text_parity}, {name: accuracy}]")
    trainer = Trainer(config, engine=shared_engine)
    version = shared_engine.version
    trainer.run()
    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    assert all("reward/mean" in r for r in records)
    assert "eval/accuracy" in records[0] and "eval/accuracy" in records[2]
    for record in records[:2]:
        assert record["train/loss"] == pytest.approx(record["train/loss"])  # finite, not NaN
        assert abs(record["train/loss"]) < 1e3
    assert shared_engine.version == version + 2
    assert (tmp_path / "rl" / "checkpoint-2" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "rl" / "metrics.png").is_file()




@rewards.register("stub_half_uniform")
def _half_uniform(**_params):
    """Even gold answers: every completion scores 1 (no signal); odd: completion j scores j % 2."""

    def reward(completions, answer, **_columns):
        return [1.0 if int(a) % 4 == 0 else float(c.endswith(("1", "3"))) for c, a in zip(completions, answer)]

    return reward


def test_dynamic_sampling_drops_uniform_groups(tiny_model_dir, problems_file, tmp_path):
    config = _config(tiny_model_dir, problems_file, tmp_path, "algorithm.preset=dapo",
                     "algorithm.max_num_gen_batches=5", "rl.prompts_per_step=4", "rl.mini_batch_size=16",
                     "reward.terms=[{name: stub_half_uniform}]")
    trainer = Trainer(config, engine=CannedEngine())
    groups, stats = trainer.rollout()
    assert len(groups) == 4 and all(g.has_signal for g in groups)
    assert stats["sampling/gen_batches"] >= 2  # half the prompts have no signal: one batch is not enough
    assert stats["sampling/signal_frac"] < 1.0
    assert stats["sampling/kept_groups"] == 4
    trainer.close()


def _groups(*signals):
    """Stub groups: reward variance (signal) or none."""
    return [Group([1], [], [0.0, 1.0] if signal else [1.0, 1.0]) for signal in signals]


class _Draws:
    """`draw()` hands out the given batches of groups in order and counts the calls."""

    def __init__(self, *batches):
        self.batches, self.calls = list(batches), 0

    def __call__(self):
        self.calls += 1
        return self.batches[self.calls - 1]


def test_sample_groups_without_dynamic_sampling_draws_once():
    draws = _Draws(_groups(False, True, False), _groups(True, True, True))
    kept, seen, batches = sample_groups(draws, 2, dynamic=False, max_batches=5)
    assert (batches, draws.calls) == (1, 1)
    assert kept == draws.batches[0][:2] and seen == draws.batches[0]  # uniform groups are kept


def test_sample_groups_stops_once_it_has_enough_groups_with_signal():
    draws = _Draws(_groups(True, False, False), _groups(False, True, True), _groups(True, True, True))
    kept, seen, batches = sample_groups(draws, 3, dynamic=True, max_batches=5)
    assert (batches, draws.calls) == (2, 2)
    assert kept == [draws.batches[0][0], *draws.batches[1][1:]] and all(g.has_signal for g in kept)
    assert seen == draws.batches[0] + draws.batches[1]
    # more than wanted: the first `want` are kept, every drawn group is seen
    draws = _Draws(_groups(True, True, True, True))
    kept, seen, batches = sample_groups(draws, 2, dynamic=True, max_batches=5)
    assert (kept, len(seen), batches) == (draws.batches[0][:2], 4, 1)


def test_sample_groups_stops_at_max_batches():
    draws = _Draws(*[_groups(False, True) for _ in range(5)])
    kept, seen, batches = sample_groups(draws, 4, dynamic=True, max_batches=3)
    assert (batches, draws.calls, len(kept), len(seen)) == (3, 3, 3, 6)
    draws = _Draws(*[_groups(False, False) for _ in range(2)])
    assert sample_groups(draws, 2, dynamic=True, max_batches=2) == ([], draws.batches[0] + draws.batches[1], 2)


def test_rl_levels_narrow_the_problems_rl_trains_and_evaluates_on(tiny_model_dir, tmp_path):
    leveled = tmp_path / "leveled.jsonl"
    leveled.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i), "level": 1 + i % 2})
                               + "\n" for i in range(16)))
    config = _config(tiny_model_dir, leveled, tmp_path, "data.levels=[1, 2]", "rl.levels=[2]")
    trainer = Trainer(config, engine=CannedEngine())
    assert {p.level for p in trainer.train} == {p.level for p in trainer.test} == {2}
    trainer.close()


def test_kill_and_resume_matches_an_uninterrupted_run(tiny_model_dir, problems_file, tmp_path, run_killed_at_step):
    overrides = ["rollout.engine=hf", "rl.steps=3", "rl.eval_every=0", "rollout.temperature=1.0"]
    full = _config(tiny_model_dir, problems_file, tmp_path / "full", *overrides)
    stages.rl.run(full)
    expected = read_metrics(tmp_path / "full" / "rl" / "metrics.jsonl")

    killed = _config(tiny_model_dir, problems_file, tmp_path / "killed", *overrides)
    run_killed_at_step(killed, 2)
    stages.rl.run(killed, resume=True)
    resumed = read_metrics(tmp_path / "killed" / "rl" / "metrics.jsonl")

    assert [r["step"] for r in resumed] == [r["step"] for r in expected] == [0, 1, 2]  # no eval: no step-3 rollout
    for got, want in zip(resumed[2:], expected[2:]):
        for key in ("reward/mean", "response_length/mean", "train/loss", "train/grad_norm", "entropy/mean"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def test_evaluation_of_step_s_sees_the_policy_after_s_updates(tiny_model_dir, problems_file, tmp_path, monkeypatch):
    config = _config(tiny_model_dir, problems_file, tmp_path, "rl.steps=2", "rl.eval_every=1")
    trainer = Trainer(config, engine=CannedEngine())
    pushed_at_start = trainer.engine.version
    monkeypatch.setattr(trainer, "evaluate",
                        lambda: {"eval/accuracy": float(trainer.engine.version - pushed_at_start)})
    trainer.run()
    trainer.close()
    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert [r["eval/accuracy"] for r in records] == [0.0, 1.0, 2.0]  # step 0: before any update


@pytest.mark.parametrize("eval_every, rollouts, steps", [(0, 3, [0, 1, 2]), (2, 4, [0, 1, 2, 3]), (3, 4, [0, 1, 2, 3])])
def test_the_final_policy_is_rolled_out_only_with_an_evaluation(tiny_model_dir, problems_file, tmp_path, monkeypatch,
                                                                 eval_every, rollouts, steps):
    """rl.steps=3: three updates; record 3 (the final policy: one more rollout, no update) exists only when
    an evaluation is due at the last step, which it always is with eval_every > 0 (docs/design.md)."""
    config = _config(tiny_model_dir, problems_file, tmp_path, "rl.steps=3", f"rl.eval_every={eval_every}")
    trainer = Trainer(config, engine=CannedEngine())
    calls = []
    rollout = trainer.rollout
    monkeypatch.setattr(trainer, "rollout", lambda: calls.append(trainer.step) or rollout())
    monkeypatch.setattr(trainer, "evaluate", lambda: {"eval/accuracy": 0.5})
    trainer.run()
    trainer.close()
    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert len(calls) == rollouts and [r["step"] for r in records] == steps
    assert all("reward/mean" in r for r in records)
    assert ("eval/accuracy" in records[-1]) == (eval_every > 0) and "train/loss" not in records[3:]


@pytest.mark.slow
def test_a_new_run_into_an_earlier_runs_folder_loses_nothing(tiny_model_dir, problems_file, tmp_path, monkeypatch):
    """The issue's case: rl.steps=1 into a folder holding an earlier run's checkpoints (as `--overwrite`
    allows): the new checkpoint keeps its weights, the earlier ones stay, rl/final/ is the output."""
    import pipeline.rl.trainer
    from pipeline.core.checkpoint import latest_checkpoint
    from pipeline.rl.trainer import Trainer

    monkeypatch.setattr(pipeline.rl.trainer, "make_engine", lambda *a, **k: CannedEngine())
    base = ("rl.eval_every=0", "reward.terms=[{name: stub_half_uniform}]")
    stages.rl.run(_config(tiny_model_dir, problems_file, tmp_path, *base, "rl.steps=2", "rl.keep_checkpoints=1"))
    out = tmp_path / "rl"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # rl.keep_checkpoints=1

    config = _config(tiny_model_dir, problems_file, tmp_path, *base, "rl.steps=1")
    result = stages.rl.run(config)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    for folder in (out / "checkpoint-1" / "adapter", out / "final" / "adapter"):
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= {
            p.name for p in folder.iterdir()}, folder
    assert result["output"] == str(out / "final" / "adapter")
    assert json.loads((out / "metrics.json").read_text())["output"] == result["output"]
    assert latest_checkpoint(out) == out / "checkpoint-1"
    trainer = Trainer(config, resume=True)  # --resume finds the new run's checkpoint
    assert trainer.step == 1
    trainer.close()


@pytest.mark.slow
def test_full_fine_tuning_ends_in_final_model(tiny_model_dir, problems_file, tmp_path, monkeypatch):
    import pipeline.rl.trainer

    monkeypatch.setattr(pipeline.rl.trainer, "make_engine", lambda *a, **k: CannedEngine())
    config = _config(tiny_model_dir, problems_file, tmp_path, "rl.eval_every=0", "rl.steps=1", "lora.enabled=false",
                     "reward.terms=[{name: stub_half_uniform}]")
    result = stages.rl.run(config)
    assert result["output"] == str(tmp_path / "rl" / "final" / "model")
    assert (tmp_path / "rl" / "final" / "model" / "config.json").is_file()


@rewards.register("stub_alternating")
def _alternating(**_params):
    """0, 1, 0, 1, ...: every group has reward variance, so every step updates the policy."""
    return lambda completions, **_columns: [float(i % 2) for i in range(len(completions))]


@pytest.mark.slow
def test_a_broken_weight_sync_stops_the_run_with_a_clear_error(tiny_model_dir, problems_file, tmp_path):
    from pipeline.config import LoraConfig
    from pipeline.core.models import load_policy, load_tokenizer
    from pipeline.rollout import HFEngine, SyncError

    class StaleEngine(HFEngine):
        def update_weights(self, model, version=None) -> int:  # a broken sync: a new version, the old weights
            self.version = version
            return self.version

    # the engine starts with the learner's weights (a fresh adapter is the base model) and never takes new ones
    engine = StaleEngine(load_policy(tiny_model_dir, LoraConfig()), load_tokenizer(tiny_model_dir))
    config = _config(tiny_model_dir, problems_file, tmp_path, "rollout.engine=hf", "rollout.sync_check_every=1",
                     "rl.lr=0.05", "rl.eval_every=0", "rollout.temperature=1.0", "reward.terms=[{name: stub_alternating}]")
    trainer = Trainer(config, engine=engine)
    with pytest.raises(SyncError, match=r"step 0: the rollout engine does not serve the learner's weights"):
        trainer.train_step()
    trainer.close()

    working = Trainer(config.model_copy(update={"output_dir": str(tmp_path / "working")}))  # its own HF engine
    record = working.train_step()
    working.close()
    assert record["sync/logp_diff_max"] == 0.0  # the HF engine serves the learner's module itself
