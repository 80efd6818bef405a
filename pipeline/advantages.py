"""Advantage estimators, docs/algorithms.md §1.

Sequence-level estimators take one scalar reward per completion, flat and ordered group by
group (`rewards[g*G:(g+1)*G]` are the G completions of prompt g), and return one advantage per
completion. The token-level path (PPO) builds per-token rewards with the KL penalty in them,
runs GAE against a value head and whitens the result over the batch.

Standard deviations are the unbiased (n-1) estimate, as `torch.std` in TRL and verl, so runs
reproduce their numbers. A group of one, or a group whose rewards are all equal, carries no
learning signal and gets zero advantages (never NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

GROUP_MODES = ("grpo", "dr_grpo", "rloo")
GRPO_EPS = 1e-6
WHITEN_EPS = 1e-8


def _unbiased_var(x: Tensor, mean: Tensor, count: Tensor, mask: Tensor | None = None) -> Tensor:
    """sum (x - mean)^2 / (n - 1), with n - 1 floored at 1 so one sample gives 0, not NaN."""
    sq = (x - mean) ** 2
    if mask is not None:
        sq = torch.where(mask, sq, 0.0)
    return sq.sum(-1, keepdim=True) / (count - 1).clamp(min=1)


def grpo_advantages(grouped: Tensor) -> Tensor:
    """§1 GRPO: `A_i = (R_i - mean(R)) / (std(R) + 1e-6)` within each row of `grouped` [N, G]."""
    mean = grouped.mean(-1, keepdim=True)
    std = _unbiased_var(grouped, mean, torch.tensor(grouped.shape[-1])).sqrt()
    return (grouped - mean) / (std + GRPO_EPS)


def dr_grpo_advantages(grouped: Tensor) -> Tensor:
    """§1 Dr.GRPO: `A_i = R_i - mean(R)` within each row of `grouped` [N, G]; no std division."""
    return grouped - grouped.mean(-1, keepdim=True)


def rloo_advantages(grouped: Tensor) -> Tensor:
    """§1 RLOO: `A_i = R_i - mean_{j != i}(R_j)` within each row of `grouped` [N, G].

    The leave-one-out mean is `(sum(R) - R_i) / (G - 1)`; a group of one has no baseline and
    gets zero advantages.
    """
    size = grouped.shape[-1]
    if size == 1:
        return torch.zeros_like(grouped)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (size - 1)
    return grouped - baseline


_GROUP_FNS = {"grpo": grpo_advantages, "dr_grpo": dr_grpo_advantages, "rloo": rloo_advantages}


def group_advantages(rewards: Tensor, group_size: int, mode: str) -> Tensor:
    """§1 group-relative advantages (`grpo`, `dr_grpo`, `rloo`) for flat `rewards` [B] -> [B].

    `rewards` holds B = num_groups * group_size values, ordered group by group.
    """
    if mode not in _GROUP_FNS:
        raise ValueError(f"unknown group advantage mode {mode!r}; valid: {', '.join(GROUP_MODES)}")
    if group_size < 1 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} cannot be split into groups of {group_size}"
        )
    grouped = rewards.float().view(-1, group_size)
    return _GROUP_FNS[mode](grouped).view(-1)


def reinforce_advantages(rewards: Tensor, baseline: bool) -> Tensor:
    """§1 REINFORCE: `A_i = R_i`, or `R_i - mean(R)` over the batch when `baseline`."""
    rewards = rewards.float()
    return rewards - rewards.mean() if baseline else rewards


def kl_penalized_token_rewards(rewards: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """§1 PPO per-token rewards [B, T]: `r_t = -beta*kl_t` for t < T, `r_T = R - beta*kl_T`.

    `rewards` [B] is the sequence reward, `kl` [B, T] a per-token KL estimate (§5), `mask`
    [B, T] marks completion tokens; T is each row's last unmasked position. Masked positions
    are 0 whatever `kl` holds there.
    """
    mask = mask.bool()
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(-1, keepdim=True)
    is_last = mask & (positions == last)
    penalty = torch.where(mask, -beta * kl.float(), 0.0)
    return penalty + torch.where(is_last, rewards.float()[:, None], 0.0)


def gae_advantages(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """§1 GAE: `delta_t = r_t + gamma*V(s_{t+1}) - V(s_t)`, `A_t = delta_t + gamma*lam*A_{t+1}`.

    Inputs are [B, T]; returns `(advantages, returns)` with `returns = A_t + V_old(s_t)`, the
    value target. Masked positions are skipped: the recursion links each unmasked token to the
    next unmasked one, V after the last token is 0, and outputs are 0 where `mask` is False.
    """
    mask = mask.bool()
    rewards = torch.where(mask, token_rewards.float(), 0.0)
    values = torch.where(mask, values.detach().float(), 0.0)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[-1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        keep = mask[:, t]
        advantages[:, t] = torch.where(keep, adv, 0.0)
        next_adv = torch.where(keep, adv, next_adv)
        next_value = torch.where(keep, values[:, t], next_value)
    return advantages, torch.where(mask, advantages + values, 0.0)


def whiten(x: Tensor, mask: Tensor) -> Tensor:
    """§1 PPO: `(x - mean) / sqrt(var + 1e-8)` over the unmasked entries of the whole batch.

    Mean and unbiased variance use unmasked entries only; masked entries come back as 0.
    """
    mask = mask.bool()
    count = mask.sum()
    mean = torch.where(mask, x, 0.0).sum() / count.clamp(min=1)
    var = _unbiased_var(torch.where(mask, x, 0.0).flatten(), mean, count, mask.flatten())
    return torch.where(mask, (x - mean) * torch.rsqrt(var + WHITEN_EPS), 0.0)
