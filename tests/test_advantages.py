"""Advantage estimators (docs/algorithms.md §1) against hand computations."""

import math

import pytest
import torch

from pipeline.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    gae_advantages,
    group_advantages,
    has_signal,
    kl_penalized_token_rewards,
    register_advantage,
    reinforce_advantages,
    whiten,
)
from pipeline.config import AlgorithmConfig
from pipeline.algorithms.losses import kl_estimate

NAN = float("nan")
# Two groups of 4: [1, 0, 0, 0] and [2, 2, 2, 2] (degenerate: all equal).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])


def test_grpo_hand_values():
    # mean 0.25; deviations .75, -.25 x3; unbiased var = (.5625 + 3*.0625) / 3 = .25, std .5
    adv = group_advantages(REWARDS, 4, "grpo")
    expected = [0.75 / (0.5 + 1e-6)] + [-0.25 / (0.5 + 1e-6)] * 3 + [0.0] * 4
    torch.testing.assert_close(adv, torch.tensor(expected))
    assert adv[0].item() == pytest.approx(1.5, abs=1e-5)


def test_dr_grpo_hand_values():
    adv = group_advantages(REWARDS, 4, "dr_grpo")
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))


def test_rloo_hand_values():
    # A_1 = 1 - mean(0, 0, 0) = 1; A_2 = 0 - mean(1, 0, 0) = -1/3
    adv = group_advantages(REWARDS, 4, "rloo")
    third = 1 / 3
    torch.testing.assert_close(adv, torch.tensor([1.0, -third, -third, -third, 0, 0, 0, 0]))


@pytest.mark.parametrize("mode", ["grpo", "dr_grpo", "rloo"])
def test_group_of_one_is_zero_not_nan(mode):
    adv = group_advantages(torch.tensor([1.0, 0.0, 3.0]), 1, mode)
    assert torch.equal(adv, torch.zeros(3))


def test_group_size_must_divide_batch():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(REWARDS, 3, "grpo")
    with pytest.raises(ValueError, match="ppo"):
        group_advantages(REWARDS, 4, "ppo")


def test_reinforce():
    r = torch.tensor([1.0, 0.0, 0.5])
    torch.testing.assert_close(reinforce_advantages(r, baseline=False), r)
    with_baseline = reinforce_advantages(r, baseline=True)  # batch mean 0.5
    torch.testing.assert_close(with_baseline, torch.tensor([0.5, -0.5, 0.0]))


def test_kl_penalized_token_rewards_hand_values():
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0]], dtype=torch.bool)
    kl = torch.tensor([[1.0, 2.0, 3.0, NAN], [NAN, 0.5, -1.0, 9.0]])
    out = kl_penalized_token_rewards(torch.tensor([1.0, 0.5]), kl, mask, beta=0.1)
    expected = torch.tensor([[-0.1, -0.2, 1.0 - 0.3, 0.0], [0.0, -0.05, 0.5 + 0.1, 0.0]])
    torch.testing.assert_close(out, expected)


def _brute_force_gae(rewards, values, mask, gamma, lam):
    """A_t = sum_l (gamma*lam)^l delta_{t+l} on each row's unmasked tokens."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        idx = mask[b].nonzero().flatten().tolist()
        v = [values[b, i].item() for i in idx] + [0.0]
        deltas = [rewards[b, i].item() + gamma * v[k + 1] - v[k] for k, i in enumerate(idx)]
        for k, i in enumerate(idx):
            adv[b, i] = sum((gamma * lam) ** l * d for l, d in enumerate(deltas[k:]))
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8)])
def test_gae_matches_brute_force_sum(gamma, lam):
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 5, generator=gen)
    values = torch.randn(3, 5, generator=gen)
    # different lengths, right padding, and a hole in the last row
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 1, 0]], dtype=torch.bool)
    rewards[~mask] = NAN
    values[~mask] = float("inf")
    adv, ret = gae_advantages(rewards, values, mask, gamma, lam)
    expected = _brute_force_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, torch.where(mask, expected + values, 0.0))
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()


def test_gae_hand_values():
    # gamma=1, lam=0.5; V = [1, 2], r = [0, 1]: delta_1 = 1 - 2 = -1, delta_0 = 0 + 2 - 1 = 1
    adv, ret = gae_advantages(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 2.0]]),
                              torch.ones(1, 2, dtype=torch.bool), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[1.0 - 0.5, -1.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.5, 1.0]]))


def test_whiten_over_unmasked_tokens():
    x = torch.tensor([[1.0, 2.0, NAN], [3.0, 1e9, 1e9]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    # mean 2, unbiased var 1
    expected = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]) / math.sqrt(1 + 1e-8)
    torch.testing.assert_close(whiten(x, mask), expected)
    single = whiten(torch.tensor([[5.0, NAN]]), torch.tensor([[True, False]]))
    assert torch.equal(single, torch.zeros(1, 2))


# --- rewards entering training (docs/rewards.md): equal rewards, masked samples

GROUP_MODES = ["grpo", "dr_grpo", "rloo"]


@pytest.mark.parametrize("mode", GROUP_MODES)
def test_eight_equal_rewards_of_a_tenth_give_exactly_zero(mode):
    # Issue 14: GRPO gave -0.0074 each (a one-ulp error in the mean amplified by 1/(std + 1e-6)).
    adv = group_advantages(torch.full((8,), 0.1), 8, mode)
    assert torch.equal(adv, torch.zeros(8))


@pytest.mark.parametrize("mode", GROUP_MODES)
@pytest.mark.parametrize("rewards", [
    [0.1 + 0.2, 0.3, 0.3, 0.1 + 0.2],  # float sums that differ in the last bit
    [1.1] * 5 + [0.1 + 1.0] * 3,  # the demo recipe: accuracy + 0.1 * format, summed two ways
    [1e6 + 0.1] * 4,  # large values, float32 spacing 0.0625
    [-0.7] * 6,
    [sum([0.1] * 10), 1.0, 1.0, 1.0],
], ids=["sum", "demo", "large", "negative", "ten-tenths"])
def test_rewards_equal_up_to_rounding_give_exactly_zero(mode, rewards):
    for dtype in (torch.float32, torch.float64):
        adv = group_advantages(torch.tensor(rewards, dtype=dtype), len(rewards), mode)
        assert torch.equal(adv, torch.zeros(len(rewards))), (dtype, adv)


@pytest.mark.parametrize("mode", GROUP_MODES)
def test_small_real_differences_keep_their_signal(mode):
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.1 + 1e-3])
    adv = group_advantages(rewards, 4, mode)
    assert adv[3] > 0 and (adv[:3] < 0).all()


def test_has_signal_is_the_shared_test():
    rewards = torch.tensor([[0.1] * 4, [0.1 + 0.2, 0.3, 0.3, 0.3], [0.0, 1.0, 0.0, 0.0], [NAN, 1.0, 1.0, 1.0]])
    valid = torch.isfinite(rewards)
    assert has_signal(rewards, valid).tolist() == [False, False, True, False]
    # fewer than two valid samples: no signal, whatever their values
    assert not has_signal(torch.tensor([1.0, 0.0]), torch.tensor([True, False]))


@pytest.mark.parametrize("mode", GROUP_MODES)
def test_masked_sample_leaves_the_group_statistics(mode):
    # Issue 14: [1, NaN, 0, 1] turned every advantage of the group into NaN.
    rewards = torch.tensor([1.0, NAN, 0.0, 1.0])
    valid = torch.tensor([True, False, True, True])
    adv = group_advantages(rewards, 4, mode, valid)
    expected = group_advantages(torch.tensor([1.0, 0.0, 1.0]), 3, mode)  # the group without it
    assert adv[1] == 0 and torch.isfinite(adv).all()
    torch.testing.assert_close(adv[[0, 2, 3]], expected)


@pytest.mark.parametrize("mode", GROUP_MODES)
def test_group_constant_after_masking_is_zero(mode):
    # constant valid rewards; a single valid sample; nothing valid
    rewards = torch.tensor([1.0, float("inf"), 1.0, 1.0, 0.5, 0.2 + 0.3, float("-inf"), NAN,
                            1.0, NAN, NAN, NAN, NAN, NAN, NAN, NAN])
    valid = torch.isfinite(rewards)
    adv = group_advantages(rewards, 4, mode, valid)
    assert torch.equal(adv, torch.zeros(16))


@pytest.mark.parametrize("mode", GROUP_MODES)
def test_non_finite_rewards_without_a_mask_raise(mode):
    with pytest.raises(ValueError, match="non-finite rewards at positions \\[1\\]"):
        group_advantages(torch.tensor([1.0, NAN, 0.0, 1.0]), 4, mode)


def test_grpo_hand_values_with_a_masked_sample():
    # valid [1, 0, 1]: mean 2/3, unbiased std sqrt(1/3)
    adv = group_advantages(torch.tensor([1.0, 0.0, NAN, 1.0]), 4, "grpo",
                           torch.tensor([True, True, False, True]))
    std = math.sqrt(1 / 3)
    expected = torch.tensor([1 / 3 / (std + 1e-6), -2 / 3 / (std + 1e-6), 0.0, 1 / 3 / (std + 1e-6)])
    torch.testing.assert_close(adv, expected)


def test_reinforce_baseline_equal_rewards_and_masks():
    assert torch.equal(reinforce_advantages(torch.full((8,), 0.1), baseline=True), torch.zeros(8))
    rewards = torch.tensor([1.0, NAN, 0.0])
    valid = torch.tensor([True, False, True])
    torch.testing.assert_close(reinforce_advantages(rewards, True, valid), torch.tensor([0.5, 0.0, -0.5]))
    torch.testing.assert_close(reinforce_advantages(rewards, False, valid), torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        reinforce_advantages(rewards, True)
# ---------------------------------------------------------------- the registry (compute_advantages)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]] * 4, dtype=torch.bool)
    return AdvantageInputs(rewards=REWARDS.clone(), group_size=4, mask=mask,
                           logp=-torch.rand(8, 3, generator=gen), logp_ref=-torch.rand(8, 3, generator=gen),
                           values=torch.randn(8, 3, generator=gen))


def _expected(algo: AlgorithmConfig, inputs: AdvantageInputs):
    if algo.advantage in ("grpo", "dr_grpo", "rloo"):
        return group_advantages(inputs.rewards, 4, algo.advantage), None
    if algo.advantage == "reinforce":
        return reinforce_advantages(inputs.rewards, algo.reinforce_baseline), None
    beta = algo.kl_coef if algo.kl_in_reward else 0.0
    kl = kl_estimate(inputs.logp, inputs.logp_ref, algo.kl_estimator, inputs.mask)
    token_rewards = kl_penalized_token_rewards(inputs.rewards, kl, inputs.mask, beta)
    adv, returns = gae_advantages(token_rewards, inputs.values, inputs.mask, algo.gamma, algo.lam)
    return whiten(adv, inputs.mask), returns


@pytest.mark.parametrize("overrides", [
    {"preset": "grpo"}, {"preset": "dr_grpo"}, {"preset": "rloo"}, {"preset": "reinforce"},
    {"preset": "reinforce", "reinforce_baseline": False}, {"preset": "ppo"},
    {"preset": "ppo", "kl_in_reward": False}, {"preset": "ppo", "kl_estimator": "k3", "gamma": 0.9},
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_compute_advantages_is_pure_and_matches_the_formulas(overrides):
    algo = AlgorithmConfig(**overrides)
    inputs = _inputs()
    before = {k: v.clone() for k, v in vars(inputs).items() if isinstance(v, torch.Tensor)}
    result = compute_advantages(algo, inputs)
    for name, tensor in before.items():  # the inputs are read, never written
        assert torch.equal(getattr(inputs, name), tensor), name
    expected, returns = _expected(algo, inputs)
    torch.testing.assert_close(result.advantages, expected)
    if returns is None:
        assert result.returns is None
    else:
        torch.testing.assert_close(result.returns, returns)
    again = compute_advantages(algo, inputs)
    assert torch.equal(again.advantages, result.advantages)


def test_kl_in_the_reward_changes_gae_advantages():
    inputs = _inputs()
    with_kl = compute_advantages(AlgorithmConfig(preset="ppo"), inputs)
    without = compute_advantages(AlgorithmConfig(preset="ppo", kl_in_reward=False), inputs)
    assert not torch.allclose(with_kl.returns, without.returns)


def test_unknown_estimator_lists_the_valid_ones():
    algo = AlgorithmConfig().model_copy(update={"advantage": "vtrace"})
    with pytest.raises(ValueError, match="unknown advantage estimator 'vtrace'.*dr_grpo, gae, grpo"):
        compute_advantages(algo, _inputs())


def test_an_estimator_name_registers_once():
    with pytest.raises(ValueError, match="'grpo' is already registered"):
        register_advantage("grpo")(lambda inputs, algo: None)
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "dr_grpo", "rloo", "reinforce", "gae"}
