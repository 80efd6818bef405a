"""Policy losses (pipeline/algorithms/policy_losses.py, docs/algorithms.md §2-4, §9) against hand computations,
and their typed settings (one class per loss, selected by `type`)."""

import pytest
import torch
from pydantic import ValidationError

from pipeline.algorithms.correction import mismatch_stats
from pipeline.algorithms.losses import AGG_MODES, gspo_sequence_ratio
from pipeline.algorithms.policy_losses import (POLICY_LOSSES, DAPOSettings, GSPOSettings, GSPOTokenSettings, PPOClipSettings,
                                    SAPOSettings, policy_loss, register_policy_loss, sapo_gate_weight)
from pipeline.algorithms.regularisers import entropy_bonus, kl_penalty
from hand_tensors import INF, NAN, full_mask, leaf, ln


# ---------------------------------------------------------------- PPO clip, DAPO, dual clip (§3)

# token ratios and advantages, logp_old = 0 so r = exp(logp)
#   r=1.5 A=+1 above 1+eps: clipped (zero grad)   r=0.5 A=-1 below 1-eps: clipped (zero grad)
#   r=1.1 A=+2 inside                             r=0.5 A=+1 below, A>0: unclipped
#   r=1.5 A=-1 above, A<0: unclipped
RATIOS = [1.5, 0.5, 1.1, 0.5, 1.5]
ADVS = [1.0, -1.0, 2.0, 1.0, -1.0]


def test_ppo_clip_value_and_gradient_per_region():
    logp = leaf([[ln(r) for r in RATIOS]])
    loss, stats = policy_loss(PPOClipSettings(eps=0.2), logp, torch.zeros(1, 5), torch.tensor([ADVS]),
                              full_mask(1, 5), "token-mean")
    per_token = [-1.2 * 1, -0.8 * -1, -1.1 * 2, -0.5 * 1, -1.5 * -1]
    assert loss.item() == pytest.approx(sum(per_token) / 5, abs=1e-6)
    assert stats["train/pg_loss"] == pytest.approx(loss.item())
    loss.backward()
    # inside or unclipped: d/dlogp (-A*r) = -A*r; clipped: 0; token-mean divides by 5
    expected = [0.0, 0.0, -2 * 1.1 / 5, -1 * 0.5 / 5, 1 * 1.5 / 5]
    torch.testing.assert_close(logp.grad, torch.tensor([expected]))
    assert stats["clip_frac/high"] == pytest.approx(0.2)
    assert stats["clip_frac/low"] == pytest.approx(0.2)
    assert stats["train/ratio_mean"] == pytest.approx(sum(RATIOS) / 5)


def test_dapo_asymmetric_bounds():
    # r=1.25, A>0: inside DAPO's 1+0.28, clipped by PPO's 1+0.2; r=0.79, A<0: clipped by both
    logp_values = [[ln(1.25), ln(0.79)]]
    adv, mask, old = torch.tensor([[1.0, -1.0]]), full_mask(1, 2), torch.zeros(1, 2)

    def grad(settings):
        logp = leaf(logp_values)
        loss, stats = policy_loss(settings, logp, old, adv, mask)
        loss.backward()
        return logp.grad, stats

    dapo, dapo_stats = grad(DAPOSettings())
    ppo, ppo_stats = grad(PPOClipSettings())
    assert dapo_stats["clip_frac/low"] == ppo_stats["clip_frac/low"] == pytest.approx(0.5)
    torch.testing.assert_close(dapo, torch.tensor([[-1.25 / 2, 0.0]]))
    torch.testing.assert_close(ppo, torch.zeros(1, 2))
    # the explicit paper values are the defaults
    torch.testing.assert_close(grad(DAPOSettings(eps_low=0.2, eps_high=0.28))[0], dapo)
    # a symmetric clip as wide as DAPO's upper bound also frees the A<0 token: the bounds differ
    wide, wide_stats = grad(PPOClipSettings(eps=0.28))
    torch.testing.assert_close(wide, torch.tensor([[-1.25 / 2, 0.79 / 2]]))
    assert wide_stats["clip_frac/low"] == 0.0
    # an override of eps_high moves the upper bound below 1.25
    torch.testing.assert_close(grad(DAPOSettings(eps_high=0.1))[0], torch.zeros(1, 2))


def test_dual_clip_caps_negative_advantage_loss():
    logp = leaf([[ln(5.0), ln(2.0)]])
    adv = torch.tensor([-1.0])  # one advantage per sequence
    loss, stats = policy_loss(PPOClipSettings(dual_clip_c=3.0), logp, torch.zeros(1, 2), adv, full_mask(1, 2))
    # r=5: -min(-5, -1.2) = 5, capped at -c*A = 3 (zero grad); r=2: loss 2 < 3, grad -A*r = 2
    assert loss.item() == pytest.approx((3.0 + 2.0) / 2)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0 / 2]]))
    assert stats["train/dual_clip_frac"] == pytest.approx(0.5)
    plain, plain_stats = policy_loss(PPOClipSettings(), logp, torch.zeros(1, 2), adv, full_mask(1, 2))
    assert plain.item() == pytest.approx((5.0 + 2.0) / 2)
    assert "train/dual_clip_frac" not in plain_stats
    # DAPO accepts the same cap
    capped, _ = policy_loss(DAPOSettings(dual_clip_c=3.0), logp, torch.zeros(1, 2), adv, full_mask(1, 2))
    assert capped.item() == pytest.approx((3.0 + 2.0) / 2)


# ---------------------------------------------------------------- GSPO (§2, §3)


def test_gspo_token_matches_gspo_when_unclipped():
    torch.manual_seed(0)
    base = 0.1 * torch.randn(2, 4)
    old = 0.1 * torch.randn(2, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5])
    results = {}
    for settings in (GSPOSettings(eps_low=0.5, eps_high=0.5), GSPOTokenSettings(eps_low=0.5, eps_high=0.5)):
        logp = base.clone().requires_grad_()
        loss, _ = policy_loss(settings, logp, old, adv, mask, "seq-mean-token-mean")
        loss.backward()
        results[settings.type] = loss, logp.grad
    s = gspo_sequence_ratio(base, old, mask)
    assert results["gspo"][0].item() == pytest.approx(-(s * adv).mean().item(), abs=1e-6)
    torch.testing.assert_close(results["gspo_token"][0], results["gspo"][0])
    torch.testing.assert_close(results["gspo_token"][1], results["gspo"][1])
    # d(-s_i*A_i/2)/dlogp_it = -A_i * s_i / (2 * |o_i|) on unmasked tokens
    lengths = mask.sum(-1, keepdim=True)
    expected = torch.where(mask, -(adv * s)[:, None] / (2 * lengths), 0.0)
    torch.testing.assert_close(results["gspo"][1], expected)


def test_gspo_default_clip_is_tiny():
    # s = sqrt(0.8) < 1 - 3e-4: clipped for A<0 (zero grad), not for A>0
    assert (GSPOSettings().eps_low, GSPOSettings().eps_high) == (3e-4, 4e-4)
    for adv, clipped in [(-1.0, True), (1.0, False)]:
        logp = leaf([[ln(2.0), ln(0.4)]])
        loss, stats = policy_loss(GSPOSettings(), logp, torch.zeros(1, 2), torch.tensor([adv]), full_mask(1, 2))
        loss.backward()
        assert (logp.grad.abs().sum().item() == 0) == clipped
        assert stats["clip_frac/low"] == (1.0 if clipped else 0.0)


# ---------------------------------------------------------------- SAPO (§3)


def test_sapo_gate_weight_is_sech_squared():
    r = torch.tensor([0.2, 0.9, 1.0, 1.3, 3.0])
    for tau in (1.0, 1.05, 4.0):
        expected = 1 / torch.cosh(tau * (r - 1) / 2) ** 2
        torch.testing.assert_close(sapo_gate_weight(r, torch.tensor(tau)), expected)
    assert sapo_gate_weight(torch.tensor(1.0), torch.tensor(1.05)).item() == 1.0


def test_sapo_gradient_is_gate_times_policy_gradient():
    ratios = torch.tensor([[0.7, 1.0, 1.6], [1.2, 0.5, 2.5]])
    adv = torch.tensor([1.5, -2.0])
    tau_pos, tau_neg = 1.0, 2.0  # distinct so using the wrong one shows
    logp = ratios.log().requires_grad_()
    loss, stats = policy_loss(SAPOSettings(tau_pos=tau_pos, tau_neg=tau_neg), logp, torch.zeros(2, 3), adv,
                              full_mask(2, 3), "token-mean")
    tau = torch.tensor([[tau_pos], [tau_neg]])
    f = torch.sigmoid(tau * (ratios - 1)) * 4 / tau
    assert loss.item() == pytest.approx(-(f * adv[:, None]).mean().item(), abs=1e-6)
    loss.backward()
    w = 1 / torch.cosh(tau * (ratios - 1) / 2) ** 2
    torch.testing.assert_close(logp.grad, -(w * ratios * adv[:, None]) / 6)
    assert stats["sapo/gate_mean"] == pytest.approx(w.mean().item(), abs=1e-6)
    assert (SAPOSettings().tau_pos, SAPOSettings().tau_neg) == (1.0, 1.05)


# ---------------------------------------------------------------- aggregation (§4) and accumulation

LENGTHS_MASK = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name", list(POLICY_LOSSES))
def test_gradient_accumulation_matches_full_batch(agg, name):
    torch.manual_seed(1)
    theta = (0.3 * torch.randn(2, 6)).requires_grad_()
    old, adv = 0.3 * torch.randn(2, 6), torch.tensor([1.0, -0.7])
    step = dict(num_tokens=8, num_seqs=2, max_len=8)
    settings = POLICY_LOSSES[name].settings()
    full, _ = policy_loss(settings, theta, old, adv, LENGTHS_MASK, agg, **step)
    (full_grad,) = torch.autograd.grad(full, theta)
    # micro-batch 1 is sequence 1 trimmed to its own width, micro-batch 2 is sequence 2
    micro = [policy_loss(settings, theta[:1, :2], old[:1, :2], adv[:1], LENGTHS_MASK[:1, :2], agg, **step)[0],
             policy_loss(settings, theta[1:], old[1:], adv[1:], LENGTHS_MASK[1:], agg, **step)[0]]
    for part in micro:
        part.backward()
    torch.testing.assert_close(sum(micro), full)
    torch.testing.assert_close(theta.grad, full_grad)
    if agg != "seq-mean-token-sum-norm":  # step normalisers equal this batch's own counts
        default, _ = policy_loss(settings, theta, old, adv, LENGTHS_MASK, agg)
        torch.testing.assert_close(default, full)


# ---------------------------------------------------------------- masked garbage


def _learner_loss(settings, agg, logp, logp_old, logp_ref, logp_engine, advantages, entropy, tis_weights):
    """The learner's sum of terms: policy loss (with TIS) + 0.1 KL - 0.01 entropy, and all stats."""
    loss, stats = policy_loss(settings, logp, logp_old, advantages, LENGTHS_MASK, agg, tis_weights=tis_weights)
    kl, kl_stats = kl_penalty(logp, logp_ref, LENGTHS_MASK, "k3", agg)
    bonus, entropy_stats = entropy_bonus(entropy, LENGTHS_MASK, agg)
    stats = {**stats, **kl_stats, **entropy_stats, **mismatch_stats(logp_old, logp_engine, LENGTHS_MASK)}
    return loss + 0.1 * kl - 0.01 * bonus, stats


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name", list(POLICY_LOSSES))
def test_masked_garbage_changes_nothing(agg, name):
    torch.manual_seed(2)
    clean = {k: 0.2 * torch.randn(2, 6) for k in ("logp", "logp_old", "logp_ref", "logp_engine")}
    clean["advantages"] = torch.randn(2, 6)
    clean["entropy"], clean["tis_weights"] = torch.rand(2, 6), torch.rand(2, 6) + 0.5
    settings_class = POLICY_LOSSES[name].settings
    settings = settings_class(**({"dual_clip_c": 3.0} if "dual_clip_c" in settings_class.model_fields else {}))
    results = []
    for garbage in (None, NAN, INF, -1e30):
        inputs = {k: v.clone() if garbage is None else v.masked_fill(~LENGTHS_MASK, garbage)
                  for k, v in clean.items()}
        inputs["logp"].requires_grad_()
        inputs["entropy"].requires_grad_()
        loss, stats = _learner_loss(settings, agg, **inputs)
        loss.backward()
        results.append((loss, inputs["logp"].grad, inputs["entropy"].grad, stats))
    assert torch.isfinite(results[0][0]) and torch.isfinite(results[0][1]).all()
    assert torch.isfinite(results[0][2]).all()
    for loss, grad, entropy_grad, stats in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][1])
        torch.testing.assert_close(entropy_grad, results[0][2])
        assert stats == pytest.approx(results[0][3])
    assert {"train/pg_loss", "train/ratio_mean", "kl/mean", "entropy/mean", "mismatch/mean_abs",
            "mismatch/kl"} <= set(stats)


# ---------------------------------------------------------------- typed settings and the registry


def test_every_loss_has_its_own_settings_class():
    assert list(POLICY_LOSSES) == ["ppo_clip", "dapo", "gspo", "gspo_token", "sapo"]
    for name, entry in POLICY_LOSSES.items():
        assert entry.settings().type == name
    assert (PPOClipSettings().eps, PPOClipSettings().dual_clip_c) == (0.2, None)
    assert (DAPOSettings().eps_low, DAPOSettings().eps_high) == (0.2, 0.28)


@pytest.mark.parametrize("settings_class, key", [
    (PPOClipSettings, "eps_high"),   # PPO's clip is symmetric: one eps
    (PPOClipSettings, "tau_pos"),
    (DAPOSettings, "eps"),           # the bug: eps was silently ignored under DAPO
    (GSPOSettings, "dual_clip_c"),
    (SAPOSettings, "eps"),
    (PPOClipSettings, "epsilon"),
])
def test_a_setting_the_loss_does_not_use_is_rejected(settings_class, key):
    with pytest.raises(ValidationError, match=key):
        settings_class(**{key: 0.3})


@pytest.mark.parametrize("settings_class, values", [
    (PPOClipSettings, {"eps": 0.0}), (PPOClipSettings, {"dual_clip_c": 1.0}),
    (DAPOSettings, {"eps_high": -0.1}), (SAPOSettings, {"tau_neg": 0.0}),
])
def test_out_of_range_settings_are_rejected(settings_class, values):
    with pytest.raises(ValidationError, match=next(iter(values))):
        settings_class(**values)


def test_settings_are_frozen():
    with pytest.raises(ValidationError):
        DAPOSettings().eps_high = 0.3


def test_a_loss_name_registers_once():
    with pytest.raises(ValueError, match="'dapo' is already registered"):
        register_policy_loss(DAPOSettings)(lambda *args: None)
    assert POLICY_LOSSES["dapo"].settings is DAPOSettings


def test_unknown_aggregation_is_rejected():
    args = (torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), full_mask(1, 2))
    with pytest.raises(ValueError, match="mean"):
        policy_loss(SAPOSettings(), *args, agg="mean")


# ---------------------------------------------------------------- TIS (§9) in the loss


def test_tis_weights_multiply_token_losses():
    logp = leaf([[0.0, 0.0]])
    loss, _ = policy_loss(PPOClipSettings(), logp, torch.zeros(1, 2), torch.tensor([1.0]), full_mask(1, 2),
                          tis_weights=torch.tensor([[2.0, 0.5]]))
    assert loss.item() == pytest.approx(-(2.0 + 0.5) / 2)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.0, -0.25]]))
