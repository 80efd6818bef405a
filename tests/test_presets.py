"""Presets (pipeline/algorithms/presets.py) yield valid configs whose names the algorithm code accepts."""

import pytest
import torch

from pipeline.algorithms.advantages import AdvantageInputs, compute_advantages
from pipeline.config import AlgorithmConfig
from pipeline.algorithms.correction import correction_weights
from pipeline.algorithms.losses import AGG_MODES, kl_estimate
from pipeline.algorithms.policy_losses import POLICY_LOSSES, policy_loss
from pipeline.algorithms.presets import ALGORITHM_PRESETS
from pipeline.algorithms.regularisers import kl_penalty

EXPECTED = {"grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "sapo", "ppo", "reinforce", "rloo"}


def test_every_recipe_has_a_preset():
    assert set(ALGORITHM_PRESETS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_config_runs_through_the_algorithm_code(name):
    cfg = AlgorithmConfig(preset=name)
    assert cfg.preset == name and cfg.loss_agg in AGG_MODES and cfg.policy_loss.type in POLICY_LOSSES
    mask = torch.ones(8, 3, dtype=torch.bool)
    logp = (-torch.rand(8, 3)).requires_grad_()
    logp_ref = logp.detach() - 0.1
    inputs = AdvantageInputs(rewards=torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1]), group_size=4, mask=mask,
                             logp=logp.detach(), logp_ref=logp_ref,
                             values=torch.zeros(8, 3) if cfg.uses_critic else None)
    result = compute_advantages(cfg, inputs)
    adv = result.advantages
    assert adv.shape[0] == 8 and torch.isfinite(adv).all()
    assert (result.returns is not None) == cfg.uses_critic
    engine = logp.detach() + 0.01
    weights, _ = correction_weights(cfg.correction, logp.detach(), engine, mask)
    loss, stats = policy_loss(cfg.policy_loss, logp, logp.detach(), adv, mask, cfg.loss_agg,
                              tis_weights=weights, max_len=3)
    kl, _ = kl_penalty(logp, logp_ref, mask, cfg.kl_estimator, cfg.loss_agg, max_len=3)
    loss = loss + cfg.kl_loss_coef * kl
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert stats["train/ratio_mean"] == pytest.approx(1.0)
    assert kl_estimate(logp, logp.detach(), cfg.kl_estimator).abs().max().item() == 0.0


def test_paper_values():
    grpo, dapo, gspo = (AlgorithmConfig(preset=n) for n in ("grpo", "dapo", "gspo"))
    assert (grpo.kl_coef, grpo.kl_estimator, grpo.loss_agg) == (0.04, "k3", "seq-mean-token-mean")
    assert (grpo.policy_loss.type, grpo.policy_loss.eps, grpo.policy_loss.dual_clip_c) == ("ppo_clip", 0.2, None)
    assert (dapo.policy_loss.type, dapo.policy_loss.eps_low, dapo.policy_loss.eps_high) == ("dapo", 0.2, 0.28)
    assert dapo.loss_agg == "token-mean"
    assert dapo.dynamic_sampling and dapo.kl_coef == 0
    assert (gspo.policy_loss.type, gspo.policy_loss.eps_low, gspo.policy_loss.eps_high) == ("gspo", 3e-4, 4e-4)
    assert gspo.kl_coef == 0
    sapo, ppo = AlgorithmConfig(preset="sapo"), AlgorithmConfig(preset="ppo")
    assert (sapo.policy_loss.type, sapo.policy_loss.tau_pos, sapo.policy_loss.tau_neg) == ("sapo", 1.0, 1.05)
    assert (ppo.advantage, ppo.kl_in_reward, ppo.gamma, ppo.lam) == ("gae", True, 1.0, 0.95)
    dr = AlgorithmConfig(preset="dr_grpo")
    assert (dr.advantage, dr.loss_agg) == ("dr_grpo", "seq-mean-token-sum-norm")


def test_override_of_one_key_keeps_the_rest():
    base = AlgorithmConfig(preset="dapo")
    tuned = AlgorithmConfig(preset="dapo", policy_loss={"eps_high": 0.3})
    assert (tuned.policy_loss.type, tuned.policy_loss.eps_low, tuned.policy_loss.eps_high) == ("dapo", 0.2, 0.3)
    expected = base.model_dump()
    expected["policy_loss"] = {**expected["policy_loss"], "eps_high": 0.3}
    assert tuned.model_dump() == expected
