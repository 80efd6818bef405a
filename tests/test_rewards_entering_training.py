"""Rewards entering training (docs/rewards.md): non-finite rewards, equal rewards, greedy RL configs."""

import json
import math

import pytest
import torch

import rewards
from pipeline.algorithms.advantages import AdvantageInputs, compute_advantages, group_advantages
from pipeline.config import ConfigError, load_config
from pipeline.rl.reward_checks import NonFiniteRewardError, finite_samples
from canned_engine import CannedEngine
from hand_tensors import INF, NAN


# --- finite_samples: which samples count, and the error that names the term and the sample

def test_error_names_the_term_and_the_sample():
    total = [1.0, 0.0, NAN, 1.0, 0.0, 1.0]
    components = {"accuracy": [1.0, 0.0, NAN, 1.0, 0.0, 1.0], "format": [0.0] * 6}
    with pytest.raises(NonFiniteRewardError, match=r"reward term 'accuracy' returned nan for prompt 0, "
                                                   r"completion 2 .*reward.non_finite=mask"):
        finite_samples(total, components, 3, "error")


@pytest.mark.parametrize("total, components, expected", [
    ([0.0, -INF], {"len": [0.0, -INF], "acc": [0.0, 0.0]}, r"reward term 'len' returned -inf for prompt 0, completion 1"),
    ([0.0, INF], {"big": [1e308, 1e308]}, r"weighted sum of the reward terms is inf .*'big': 1e\+308"),
    ([0.0, NAN], {"a": [None, None], "b": [0.0, None]}, r"every reward term returned None.*prompt 0, completion 1"),
    ([1.0, 1.0, 1.0, NAN], {"a": [1.0, 1.0, 1.0, NAN], "b": [0.0, 0.0, 0.0, INF]},
     r"'a' returned nan, reward term 'b' returned inf for prompt 1, completion 1"),
])
def test_error_message_for_each_kind_of_non_finite_total(total, components, expected):
    with pytest.raises(NonFiniteRewardError, match=expected):
        finite_samples(total, components, 2, "error")


def test_mask_policy_flags_the_non_finite_samples():
    total = [1.0, NAN, 0.0, 1.0, INF, -INF, 0.5, 0.5]
    assert finite_samples(total, {"r": total}, 4, "mask") == [True, False, True, True, False, False, True, True]
    assert finite_samples([0.0, 1.0], {"r": [0.0, 1.0]}, 2, "error") == [True, True]


# --- the trainer: error before any update, or masked samples that leave the weights finite



@rewards.register("stub_nan_second")
def _nan_second(**_params):
    """Issue 14's group: completions 0..3 score [1, NaN, 0, 1]."""

    def reward(completions, **_columns):
        return [[1.0, NAN, 0.0, 1.0][int(c.split()[-1])] for c in completions]

    return reward


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(8)))
    return path


def _trainer(tiny_model_dir, problems_file, tmp_path, *overrides):
    from pipeline.rl.trainer import Trainer

    config = load_config(None, [
        f"model.name={tiny_model_dir}", f"output_dir={tmp_path}", f"data.train={problems_file}",
        f"data.test={problems_file}", "rl.steps=1", "rl.prompts_per_step=2", "rl.group_size=4",
        "rl.mini_batch_size=8", "rl.micro_batch_size=8", "rl.eval_every=0", "rl.lr=1e-2",
        "rollout.max_tokens=4", "reward.workers=1", "rl.bf16_autocast=false",
        "reward.terms=[{name: stub_nan_second}, {name: format, weight: 0.1}]", *overrides])
    return Trainer(config, engine=CannedEngine())


def test_non_finite_reward_is_an_error_by_default(tiny_model_dir, problems_file, tmp_path):
    trainer = _trainer(tiny_model_dir, problems_file, tmp_path)
    before = [p.detach().clone() for p in trainer.learner.params]
    with pytest.raises(NonFiniteRewardError, match="'stub_nan_second' returned nan for prompt 0, completion 1"):
        trainer.train_step()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.learner.params))  # no update ran
    trainer.close()


def _advantages(trainer, batch):
    """The step's advantages from the trainer's own pieces: learner.score, then the estimator."""
    scores = trainer.learner.score(batch)
    logp = scores.logp_old if scores.logp_old is not None else batch.logp_engine
    inputs = AdvantageInputs(rewards=batch.rewards, group_size=batch.group_size, mask=batch.loss_mask,
                             valid=batch.valid, logp=logp, logp_ref=scores.logp_ref, values=scores.values)
    return scores, compute_advantages(trainer.config.algorithm, inputs)


@pytest.mark.parametrize("advantage", ["grpo", "rloo", "reinforce", "gae"])
def test_masked_non_finite_reward_leaves_the_sample_out(tiny_model_dir, problems_file, tmp_path, advantage):
    trainer = _trainer(tiny_model_dir, problems_file, tmp_path, "reward.non_finite=mask",
                       f"algorithm.advantage={advantage}")
    groups, stats = trainer.rollout()
    assert stats["reward/non_finite"] == 2  # one per group
    assert math.isfinite(stats["reward/mean"]) and stats["reward/mean"] == pytest.approx(2 / 3)
    assert [g.valid for g in groups] == [[True, False, True, True]] * 2
    batch = trainer.build_batch(groups)
    assert batch.loss_mask.shape[0] == 8 and not batch.loss_mask[[1, 5]].any()  # the group keeps its G rows
    assert batch.valid.tolist() == [True, False, True, True] * 2
    scores, advantages = _advantages(trainer, batch)
    assert torch.isfinite(advantages.advantages).all()
    assert (advantages.advantages[[1, 5]] == 0).all()  # the masked samples have no advantage
    if advantage in ("grpo", "rloo"):
        expected = group_advantages(torch.tensor([1.0, 0.0, 1.0]), 3, advantage)  # the group without it
        torch.testing.assert_close(advantages.advantages[[0, 2, 3]], expected)
    stats = trainer.learner.update(batch, scores, advantages, trainer.shuffle)
    assert math.isfinite(stats["train/loss"]) and math.isfinite(stats["train/grad_norm"])
    assert all(torch.isfinite(p).all() for p in trainer.learner.params)
    # the trainer's own step wires the same mask through: a finite update, finite weights
    record = trainer.train_step()
    assert record["reward/non_finite"] == 2 and math.isfinite(record["train/loss"])
    assert all(torch.isfinite(p).all() for p in trainer.learner.params)
    trainer.close()


@rewards.register("stub_tenths")
def _tenths(**_params):
    """Every completion scores 0.1 + 0.2 or 0.3: equal rewards up to rounding."""

    def reward(completions, **_columns):
        return [0.1 + 0.2 if int(c.split()[-1]) % 2 else 0.3 for c in completions]

    return reward


def test_equal_rewards_have_no_signal_and_zero_advantages(tiny_model_dir, problems_file, tmp_path):
    trainer = _trainer(tiny_model_dir, problems_file, tmp_path, "reward.terms=[{name: stub_tenths}]",
                       "algorithm.kl_coef=0")
    groups, stats = trainer.rollout()
    assert not any(g.has_signal for g in groups) and stats["sampling/signal_frac"] == 0
    batch = trainer.build_batch(groups)
    _, advantages = _advantages(trainer, batch)
    assert torch.equal(advantages.advantages, torch.zeros(8))
    # the zero-advantage skip sees them
    assert len(trainer.learner.learned_rows(batch, advantages.advantages, torch.arange(8))) == 0
    trainer.close()


# --- degenerate sampling

@pytest.mark.parametrize("overrides", [
    ["rollout.temperature=0"],
    ["rollout.temperature=0.0", "rl.group_size=2", "rl.mini_batch_size=16"],
    ["rollout.temperature=0", "algorithm.preset=dapo"],
])
def test_greedy_rollouts_for_rl_groups_are_a_config_error(overrides):
    with pytest.raises(ConfigError, match=r"rollout.temperature=0 .*rl.group_size=\d+"):
        load_config(None, overrides)


def test_greedy_rollouts_are_fine_without_a_group():
    config = load_config(None, ["rollout.temperature=0", "rl.group_size=1", "algorithm.advantage=reinforce",
                                "rl.mini_batch_size=8", "rl.micro_batch_size=8"])
    assert config.rollout.temperature == 0
