"""Presets (pipeline/presets.py) yield valid configs whose names the algorithm code accepts."""

import pytest
import torch

from pipeline.advantages import gae_advantages, group_advantages, reinforce_advantages, whiten
from pipeline.config import AlgorithmConfig
from pipeline.losses import AGG_MODES, get_policy_loss, kl_estimate, truncated_is_weights
from pipeline.presets import PRESETS

EXPECTED = {"grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "sapo", "ppo", "reinforce", "rloo"}
HYPER = ("eps", "eps_low", "eps_high", "tau_pos", "tau_neg", "dual_clip_c")


def test_every_recipe_has_a_preset():
    assert set(PRESETS) == EXPECTED


def _advantages(cfg: AlgorithmConfig, rewards: torch.Tensor, mask: torch.Tensor):
    if cfg.advantage in ("grpo", "dr_grpo", "rloo"):
        return group_advantages(rewards, 4, cfg.advantage)
    if cfg.advantage == "reinforce":
        return reinforce_advantages(rewards, cfg.reinforce_baseline)
    token_rewards = torch.zeros_like(mask, dtype=torch.float32)
    token_rewards[:, -1] = rewards
    values = torch.zeros_like(token_rewards)
    adv, _ = gae_advantages(token_rewards, values, mask, cfg.gamma, cfg.lam)
    return whiten(adv, mask)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_config_runs_through_the_algorithm_code(name):
    cfg = AlgorithmConfig(preset=name)
    assert cfg.preset == name and cfg.loss_agg in AGG_MODES
    mask = torch.ones(8, 3, dtype=torch.bool)
    adv = _advantages(cfg, torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1]), mask)
    assert adv.shape[0] == 8 and torch.isfinite(adv).all()
    logp = (-torch.rand(8, 3)).requires_grad_()
    engine = logp.detach() + 0.01
    weights, _ = truncated_is_weights(logp.detach(), engine, mask, cfg.tis, cfg.tis_cap)
    loss, stats = get_policy_loss(cfg.policy_loss)(
        logp, logp.detach(), adv, mask, cfg.loss_agg, **{k: getattr(cfg, k) for k in HYPER},
        tis_weights=weights, logp_ref=logp.detach() - 0.1, kl_coef=cfg.kl_coef,
        kl_estimator=cfg.kl_estimator, max_len=3,
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert kl_estimate(logp, logp.detach(), cfg.kl_estimator).abs().max().item() == 0.0


def test_paper_values():
    grpo, dapo, gspo = (AlgorithmConfig(preset=n) for n in ("grpo", "dapo", "gspo"))
    assert (grpo.kl_coef, grpo.kl_estimator, grpo.loss_agg) == (0.04, "k3", "seq-mean-token-mean")
    assert (dapo.eps_low, dapo.eps_high, dapo.loss_agg) == (0.2, 0.28, "token-mean")
    assert dapo.dynamic_sampling and dapo.kl_coef == 0
    assert (gspo.eps_low, gspo.eps_high, gspo.kl_coef) == (3e-4, 4e-4, 0)
    sapo, ppo = AlgorithmConfig(preset="sapo"), AlgorithmConfig(preset="ppo")
    assert (sapo.tau_pos, sapo.tau_neg) == (1.0, 1.05)
    assert (ppo.advantage, ppo.kl_in_reward, ppo.gamma, ppo.lam) == ("gae", True, 1.0, 0.95)
    dr = AlgorithmConfig(preset="dr_grpo")
    assert (dr.advantage, dr.loss_agg) == ("dr_grpo", "seq-mean-token-sum-norm")


def test_override_of_one_key_keeps_the_rest():
    base, tuned = AlgorithmConfig(preset="dapo"), AlgorithmConfig(preset="dapo", eps_high=0.3)
    assert tuned.eps_high == 0.3
    assert tuned.model_dump() == {**base.model_dump(), "eps_high": 0.3}
