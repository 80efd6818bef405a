"""The rollout batch one RL step hands on (pipeline/learner/batch.py): layout, engine log-probs, rewards,
and DAPO's overlong filter (docs/algorithms.md §7)."""

import dataclasses

import pytest
import torch

from pipeline.learner.batch import build_batch

PROMPTS = [[5, 6], [5, 6], [7], [7]]
COMPLETIONS = [[10, 11, 12], [13], [14, 15], [16, 17, 18]]
LOGPROBS = [[-0.1, -0.2, -0.3], [-0.4], [-0.5, -0.6], [-0.7, -0.8, -0.9]]
REWARDS = [1.0, 0.0, 0.5, 0.25]
VALID = [True] * 4
TRUNCATED = [False, True, False, True]


def _build(overlong_filter):
    return build_batch(PROMPTS, COMPLETIONS, LOGPROBS, REWARDS, VALID, TRUNCATED, 2, 0, overlong_filter)


def test_rows_hold_their_completion_logprobs_and_rewards():
    batch = _build(False)
    assert len(batch) == 4 and batch.group_size == 2
    expected_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(batch.loss_mask, expected_mask)
    assert torch.equal(batch.seqs.completion_mask, expected_mask)
    expected_logp = torch.tensor([[-0.1, -0.2, -0.3], [-0.4, 0, 0], [-0.5, -0.6, 0], [-0.7, -0.8, -0.9]])
    torch.testing.assert_close(batch.logp_engine, expected_logp)
    assert batch.rewards.dtype == torch.float64 and batch.rewards.tolist() == REWARDS
    assert batch.seqs.completion_ids[2, :2].tolist() == [14, 15]


def test_overlong_filter_drops_truncated_rows_from_the_loss():
    filtered, kept = _build(True), _build(False)
    # truncated rows (1 and 3) count for nothing; the others keep their completion tokens
    assert filtered.loss_mask.any(-1).tolist() == [True, False, True, False]
    assert torch.equal(filtered.loss_mask[[0, 2]], kept.loss_mask[[0, 2]])
    # the sequences themselves (and the engine's log-probs, rewards) are unchanged
    assert torch.equal(filtered.seqs.completion_mask, kept.seqs.completion_mask)
    torch.testing.assert_close(filtered.logp_engine, kept.logp_engine)
    assert filtered.rewards.tolist() == REWARDS
    nothing_truncated = build_batch(PROMPTS, COMPLETIONS, LOGPROBS, REWARDS, VALID, [False] * 4, 2, 0, True)
    assert torch.equal(nothing_truncated.loss_mask, kept.loss_mask)


def test_masked_rewards_drop_their_rows_from_the_loss():
    rewards = [1.0, float("nan"), 0.5, float("inf")]
    batch = build_batch(PROMPTS, COMPLETIONS, LOGPROBS, rewards, [True, False, True, False], [False] * 4, 2, 0, False)
    assert batch.valid.tolist() == [True, False, True, False]
    assert batch.loss_mask.any(-1).tolist() == [True, False, True, False]
    assert torch.equal(batch.loss_mask[[0, 2]], _build(False).loss_mask[[0, 2]])
    # the masked rows' sequences and rewards are kept as they came (nothing lost silently)
    assert torch.equal(batch.seqs.completion_mask, _build(False).seqs.completion_mask)
    assert batch.rewards[1].isnan() and batch.rewards[3].isinf()


def test_the_batch_is_immutable():
    batch = _build(False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.loss_mask = torch.zeros(4, 3, dtype=torch.bool)
