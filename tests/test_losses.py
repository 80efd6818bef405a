"""Ratios, aggregation, KL estimators and the value loss (pipeline/algorithms/losses.py,
docs/algorithms.md §2-5) against hand computations on small tensors. The policy losses are
tested in test_policy_losses.py, the KL and entropy terms in test_regularisers.py, the rollout
correction (TIS) in test_correction.py, log-probs and entropies from logits in test_logprobs.py."""

import math

import pytest
import torch

from pipeline.algorithms.losses import (
    aggregate,
    gspo_sequence_ratio,
    kl_estimate,
    value_loss,
)
from hand_tensors import INF, NAN, full_mask, leaf, ln


# ---------------------------------------------------------------- ratios (§2)


def test_gspo_sequence_ratio_is_geometric_mean():
    logp = torch.tensor([[ln(2.0), ln(0.4), NAN]])
    mask = torch.tensor([[True, True, False]])
    s = gspo_sequence_ratio(logp, torch.zeros(1, 3), mask)
    assert s.item() == pytest.approx(math.sqrt(0.8), abs=1e-6)
    assert s.item() == pytest.approx(0.894, abs=1e-3)


# ---------------------------------------------------------------- aggregation (§4)

LENGTHS_MASK = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)


def test_aggregation_modes_hand_values():
    # seq 1: [4, 6] (sum 10, mean 5); seq 2: six 1s (sum 6, mean 1); 8 tokens, sum 16
    loss = torch.tensor([[4.0, 6.0, NAN, INF, 1e9, NAN], [1.0] * 6])
    assert aggregate(loss, LENGTHS_MASK, "token-mean").item() == pytest.approx(16 / 8)
    assert aggregate(loss, LENGTHS_MASK, "seq-mean-token-mean").item() == pytest.approx((5 + 1) / 2)
    norm = aggregate(loss, LENGTHS_MASK, "seq-mean-token-sum-norm")
    assert norm.item() == pytest.approx(16 / (2 * 6))  # L_max defaults to the width T
    norm = aggregate(loss, LENGTHS_MASK, "seq-mean-token-sum-norm", max_len=8)
    assert norm.item() == pytest.approx(16 / (2 * 8))
    # a fully masked (filtered) sequence is not counted among the sequences
    empty = torch.tensor([[True, True, False, False, False, False], [False] * 6])
    assert aggregate(loss, empty, "seq-mean-token-mean").item() == pytest.approx(5.0)
    assert aggregate(loss, empty, "seq-mean-token-sum-norm").item() == pytest.approx(10 / 6)
    with pytest.raises(ValueError, match="token-sum"):
        aggregate(loss, LENGTHS_MASK, "token-sum")


# ---------------------------------------------------------------- KL (§5)


def test_kl_estimators_hand_values():
    logp, logp_ref = torch.tensor([[ln(0.5)]]), torch.tensor([[ln(0.25)]])
    d = ln(0.5)  # logp_ref - logp
    assert kl_estimate(logp, logp_ref, "k1").item() == pytest.approx(-d)
    assert kl_estimate(logp, logp_ref, "k2").item() == pytest.approx(0.5 * d**2)
    assert kl_estimate(logp, logp_ref, "k3").item() == pytest.approx(0.5 - d - 1)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, logp_ref, "k4")


def test_k3_is_nonnegative_clamped_and_masked():
    d = torch.linspace(-30, 30, 101).requires_grad_()
    k3 = kl_estimate(torch.zeros(101), d, "k3")
    assert (k3 >= 0).all() and k3.max().item() == 10.0
    k3.sum().backward()
    assert torch.isfinite(d.grad).all()
    mask = torch.tensor([[True, False]])
    out = kl_estimate(torch.tensor([[0.0, NAN]]), torch.tensor([[ln(0.5), INF]]), "k3", mask)
    torch.testing.assert_close(out, torch.tensor([[0.5 + ln(2) - 1, 0.0]]))


def test_k3_mean_estimates_kl_on_sampled_tokens():
    gen = torch.Generator().manual_seed(0)
    logp_pi = torch.log_softmax(torch.tensor([1.0, 0.0, -1.0, 0.5]), -1)
    logp_ref = torch.log_softmax(torch.tensor([0.0, 0.5, 0.0, -0.5]), -1)
    exact = (logp_pi.exp() * (logp_pi - logp_ref)).sum().item()
    tokens = torch.multinomial(logp_pi.exp(), 200_000, replacement=True, generator=gen)
    for kind in ("k1", "k3"):
        est = kl_estimate(logp_pi[tokens], logp_ref[tokens], kind).mean().item()
        assert est == pytest.approx(exact, abs=1e-2)




# ---------------------------------------------------------------- value loss (PPO)


def test_value_loss_clipped_and_unclipped_branches():
    values = leaf([[1.0, 1.5, 0.5]])
    old, returns = torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    loss, stats = value_loss(values, old, returns, full_mask(1, 3), clip=0.2)
    # token 1: no move, 0.5*1 = 0.5; token 2: unclipped .25 > clipped (1.2-1)^2 = .04 -> .125;
    # token 3: clipped V=0.8 gives .64 > unclipped .25 -> .32 with zero gradient
    assert loss.item() == pytest.approx((0.5 + 0.125 + 0.32) / 3)
    assert stats["train/vf_clip_frac"] == pytest.approx(1 / 3)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[-1.0 / 3, 0.5 / 3, 0.0]]))
