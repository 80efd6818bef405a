"""The KL and entropy terms the learner adds to the policy loss (pipeline/algorithms/regularisers.py,
docs/algorithms.md §5-6) against hand computations."""

import pytest
import torch

from hand_tensors import NAN, ln
from pipeline.algorithms.policy_losses import PPOClipSettings, policy_loss
from pipeline.algorithms.regularisers import entropy_bonus, kl_penalty


def test_kl_and_entropy_terms_in_the_loss():
    mask, zeros = torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2)
    logp_ref, entropy = torch.tensor([[ln(0.5), 0.0]]), torch.tensor([[1.0, 3.0]])
    pg, _ = policy_loss(PPOClipSettings(), zeros, zeros, torch.zeros(1), mask)
    kl, kl_stats = kl_penalty(zeros, logp_ref, mask, "k3", "token-mean")
    bonus, entropy_stats = entropy_bonus(entropy, mask, "token-mean")
    loss = pg + 0.1 * kl - 0.01 * bonus  # the learner's weighting
    k3 = (0.5 + ln(2) - 1) / 2
    assert loss.item() == pytest.approx(0.1 * k3 - 0.01 * 2.0, abs=1e-6)
    assert kl_stats["kl/mean"] == pytest.approx(k3) and entropy_stats["entropy/mean"] == pytest.approx(2.0)


def test_kl_penalty_gradient_and_aggregation():
    # k1 = logp - logp_ref: gradient 1 per token; seq-mean-token-mean over rows of 1 and 2 tokens
    logp = torch.zeros(2, 2, requires_grad=True)
    mask = torch.tensor([[True, False], [True, True]])
    logp_ref = torch.tensor([[-1.0, NAN], [-2.0, -4.0]])
    kl, stats = kl_penalty(logp, logp_ref, mask, "k1", "seq-mean-token-mean")
    assert kl.item() == pytest.approx((1.0 + 3.0) / 2)
    assert stats["kl/mean"] == pytest.approx((1 + 2 + 4) / 3)
    kl.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5, 0.0], [0.25, 0.25]]))


def test_entropy_bonus_carries_a_gradient():
    # the bonus is maximised: its gradient on each token's entropy is its aggregation weight
    entropy = torch.tensor([[1.0, 2.0, NAN]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    bonus, stats = entropy_bonus(entropy, mask, "token-mean")
    assert bonus.item() == pytest.approx(1.5) and stats["entropy/mean"] == pytest.approx(1.5)
    bonus.backward()
    torch.testing.assert_close(entropy.grad, torch.tensor([[0.5, 0.5, 0.0]]))
    bonus, _ = entropy_bonus(entropy.detach(), mask, "seq-mean-token-sum-norm", num_seqs=1, max_len=4)
    assert bonus.item() == pytest.approx(3.0 / 4)
