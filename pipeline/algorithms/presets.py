"""Algorithm presets: each paper's recipe as values of `AlgorithmConfig` fields.

`algorithm.preset: dapo` starts from ALGORITHM_PRESETS["dapo"]; keys the user sets override it. A preset
names its policy loss only: the loss's settings (clip ranges, gate temperatures) default to the
paper's values in pipeline/algorithms/policy_losses.py, the one place they live.
Sources: docs/algorithms.md §1-9 and the papers named per entry.
"""

from typing import Any

ALGORITHM_PRESETS: dict[str, dict[str, Any]] = {
    # DeepSeekMath (Shao et al. 2024): group-normalised advantage, PPO clip, KL in the loss.
    "grpo": dict(advantage="grpo", policy_loss=dict(type="ppo_clip"), loss_agg="seq-mean-token-mean",
                 kl_coef=0.04, kl_estimator="k3"),
    # Dr.GRPO (Liu et al. 2025): no std division, constant normaliser, no KL.
    "dr_grpo": dict(advantage="dr_grpo", policy_loss=dict(type="ppo_clip"), loss_agg="seq-mean-token-sum-norm",
                    kl_coef=0.0),
    # DAPO (Yu et al. 2025): clip-higher, token-mean, dynamic sampling, overlong handling, no KL.
    "dapo": dict(advantage="grpo", policy_loss=dict(type="dapo"), loss_agg="token-mean",
                 kl_coef=0.0, dynamic_sampling=True,
                 overlong_filter=False),
    # GSPO (Zheng et al. 2025): sequence-level ratio, tiny clip range, no KL.
    "gspo": dict(advantage="grpo", policy_loss=dict(type="gspo"), loss_agg="seq-mean-token-mean",
                 kl_coef=0.0),
    "gspo_token": dict(advantage="grpo", policy_loss=dict(type="gspo_token"), loss_agg="seq-mean-token-mean",
                       kl_coef=0.0),
    # SAPO: soft sigmoid gate instead of a hard clip.
    "sapo": dict(advantage="grpo", policy_loss=dict(type="sapo"), loss_agg="seq-mean-token-mean",
                 kl_coef=0.0),
    # PPO with a critic (Schulman et al. 2017; Ouyang et al. 2022): GAE, KL in the reward.
    "ppo": dict(advantage="gae", policy_loss=dict(type="ppo_clip"), loss_agg="token-mean",
                kl_coef=0.05, kl_estimator="k1", kl_in_reward=True, gamma=1.0, lam=0.95),
    # REINFORCE with a batch-mean baseline. The whole completion is one action, so its gradient
    # is A_i * sum_t grad logp_it: token sums over a constant (no length normalisation).
    "reinforce": dict(advantage="reinforce", reinforce_baseline=True, policy_loss=dict(type="ppo_clip"),
                      loss_agg="seq-mean-token-sum-norm", kl_coef=0.0),
    # RLOO (Ahmadian et al. 2024): leave-one-out baseline; like REINFORCE, one action per
    # completion (mean over samples of sequence log-prob gradients).
    "rloo": dict(advantage="rloo", policy_loss=dict(type="ppo_clip"), loss_agg="seq-mean-token-sum-norm",
                 kl_coef=0.0),
}
