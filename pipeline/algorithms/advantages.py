"""Advantage estimators, docs/algorithms.md §1.

Sequence-level estimators take one scalar reward per completion, flat and ordered group by
group (`rewards[g*G:(g+1)*G]` are the G completions of prompt g), and return one advantage per
completion. The token-level path (PPO) builds per-token rewards with the KL penalty in them,
runs GAE against a value head and whitens the result over the batch.

Standard deviations are the unbiased (n-1) estimate, as `torch.std` in TRL and verl, so runs
reproduce their numbers. Rules shared by every group estimator (docs/rewards.md, "Rewards
entering training"):

* `valid` (optional, bool like `rewards`) marks the samples that take part: an invalid sample
  (a non-finite reward masked out) is left out of its group's mean, std and leave-one-out
  baseline and gets advantage 0; its group keeps its G rows. Without `valid` every reward must
  be finite (ValueError otherwise: a NaN would turn the whole group's advantages into NaN).
* A group without reward variance (`has_signal` False: fewer than two valid samples, or valid
  rewards equal up to `SIGNAL_RTOL`) gets exactly 0, never a rounding residue amplified by
  `1/(std + 1e-6)`. Dynamic sampling (§8) uses the same `has_signal`.

Group statistics are computed in float64 and returned as float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from pipeline.algorithms.losses import kl_estimate

GROUP_MODES = ("grpo", "dr_grpo", "rloo")
GRPO_EPS = 1e-6
WHITEN_EPS = 1e-8
SIGNAL_RTOL = 1e-6
"""Rewards whose spread is at most `SIGNAL_RTOL * max(1, max|R|)` count as equal: float sums
such as `0.1 + 0.2` vs `0.3` (or a float32 round trip) differ by a few ulps, not by a signal."""


@dataclass(frozen=True)
class Advantages:
    """Output of an advantage estimator (§1)."""

    advantages: Tensor
    """[B] one per completion, or [B, T] per token (GAE)."""
    returns: Tensor | None = None
    """[B, T] value targets (GAE), else None."""


def has_signal(rewards: Tensor, valid: Tensor | None = None) -> Tensor:
    """§1/§8 whether each group (the last dim of `rewards` [..., G]) has reward variance -> [...].

    True when at least two samples are valid and their rewards spread by more than
    `SIGNAL_RTOL * max(1, max|R|)`. The one test behind "equal rewards give zero advantages"
    and dynamic sampling's "has signal"; invalid entries may hold anything (NaN, inf).
    """
    rewards = rewards.double()
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
    hi = torch.where(valid, rewards, -torch.inf).amax(-1)
    lo = torch.where(valid, rewards, torch.inf).amin(-1)
    scale = torch.where(valid, rewards.abs(), 0.0).amax(-1).clamp(min=1.0)
    return (valid.sum(-1) >= 2) & (hi - lo > SIGNAL_RTOL * scale)


def _valid_mask(rewards: Tensor, valid: Tensor | None) -> Tensor:
    """`valid` as a bool tensor (all True when None, which requires finite rewards)."""
    if valid is None:
        if not torch.isfinite(rewards).all():
            bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
            raise ValueError(f"non-finite rewards at positions {bad}; mask them with `valid`")
        return torch.ones_like(rewards, dtype=torch.bool)
    if valid.shape != rewards.shape:
        raise ValueError(f"valid of shape {tuple(valid.shape)} for rewards of shape {tuple(rewards.shape)}")
    return valid.bool()


def _group_moments(grouped: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(rewards with invalid entries 0, valid count, valid mean) per row, float64, keepdim."""
    x = torch.where(valid, grouped.double(), 0.0)
    count = valid.sum(-1, keepdim=True)
    return x, count, x.sum(-1, keepdim=True) / count.clamp(min=1)


def _only_signal(advantages: Tensor, grouped: Tensor, valid: Tensor) -> Tensor:
    """Zero on invalid samples and on every sample of a group without signal; float32."""
    keep = valid & has_signal(grouped, valid)[..., None]
    return torch.where(keep, advantages, 0.0).float()


def _unbiased_var(x: Tensor, mean: Tensor, count: Tensor, mask: Tensor | None = None) -> Tensor:
    """sum (x - mean)^2 / (n - 1), with n - 1 floored at 1 so one sample gives 0, not NaN."""
    sq = (x - mean) ** 2
    if mask is not None:
        sq = torch.where(mask, sq, 0.0)
    return sq.sum(-1, keepdim=True) / (count - 1).clamp(min=1)


def grpo_advantages(grouped: Tensor, valid: Tensor | None = None) -> Tensor:
    """§1 GRPO: `A_i = (R_i - mean(R)) / (std(R) + 1e-6)` within each row of `grouped` [N, G]."""
    valid = _valid_mask(grouped, valid)
    x, count, mean = _group_moments(grouped, valid)
    std = _unbiased_var(x, mean, count, valid).sqrt()
    return _only_signal((x - mean) / (std + GRPO_EPS), grouped, valid)


def dr_grpo_advantages(grouped: Tensor, valid: Tensor | None = None) -> Tensor:
    """§1 Dr.GRPO: `A_i = R_i - mean(R)` within each row of `grouped` [N, G]; no std division."""
    valid = _valid_mask(grouped, valid)
    x, _, mean = _group_moments(grouped, valid)
    return _only_signal(x - mean, grouped, valid)


def rloo_advantages(grouped: Tensor, valid: Tensor | None = None) -> Tensor:
    """§1 RLOO: `A_i = R_i - mean_{j != i}(R_j)` within each row of `grouped` [N, G].

    The leave-one-out mean is `(sum(R) - R_i) / (n - 1)` over the n valid samples; a group
    with fewer than two has no baseline and gets zero advantages.
    """
    valid = _valid_mask(grouped, valid)
    x, count, _ = _group_moments(grouped, valid)
    baseline = (x.sum(-1, keepdim=True) - x) / (count - 1).clamp(min=1)
    return _only_signal(x - baseline, grouped, valid)


_GROUP_FNS = {"grpo": grpo_advantages, "dr_grpo": dr_grpo_advantages, "rloo": rloo_advantages}


def group_advantages(rewards: Tensor, group_size: int, mode: str, valid: Tensor | None = None) -> Tensor:
    """§1 group-relative advantages (`grpo`, `dr_grpo`, `rloo`) for flat `rewards` [B] -> [B].

    `rewards` holds B = num_groups * group_size values, ordered group by group; `valid` [B]
    (bool) marks the samples that count (module docstring). Raises ValueError for an unknown
    mode, a batch that does not split into groups, or non-finite rewards without `valid`.
    """
    if mode not in _GROUP_FNS:
        raise ValueError(f"unknown group advantage mode {mode!r}; valid: {', '.join(GROUP_MODES)}")
    if group_size < 1 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} cannot be split into groups of {group_size}"
        )
    valid = _valid_mask(rewards, valid)
    grouped = rewards.view(-1, group_size)
    return _GROUP_FNS[mode](grouped, valid.view(-1, group_size)).view(-1)


def reinforce_advantages(rewards: Tensor, baseline: bool, valid: Tensor | None = None) -> Tensor:
    """§1 REINFORCE: `A_i = R_i`, or `R_i - mean(R)` over the batch's valid samples when `baseline`.

    With the baseline the batch is one group: exactly 0 when it has no signal (`has_signal`).
    Invalid samples get 0.
    """
    valid = _valid_mask(rewards, valid)
    if not baseline:
        return torch.where(valid, rewards.float(), 0.0)
    x, _, mean = _group_moments(rewards[None], valid[None])
    return _only_signal(x - mean, rewards[None], valid[None])[0]


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


# ---------------------------------------------------------------------------- the registry


@dataclass(frozen=True, kw_only=True)
class AdvantageInputs:
    """What an estimator may read (keyword arguments only); rows are ordered group by group."""

    rewards: Tensor
    """[B] sequence rewards (float64; anything where `valid` is False)."""
    group_size: int
    mask: Tensor
    """[B, T] loss mask."""
    valid: Tensor | None = None
    """[B] bool: samples whose reward takes part (a masked non-finite reward is not); None = all."""
    logp: Tensor | None = None
    """[B, T] the sampling policy's log-probs (pi_old), for a KL penalty in the reward."""
    logp_ref: Tensor | None = None
    """[B, T] the reference policy's log-probs, for a KL penalty in the reward."""
    values: Tensor | None = None
    """[B, T] V_old from the critic (GAE)."""


Estimator = Callable[[AdvantageInputs, "AlgorithmConfig"], Advantages]  # noqa: F821
ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {}
"""`algorithm.advantage` name -> estimator `fn(inputs, algorithm_config) -> Advantages`."""


def register_advantage(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator: register an estimator under `algorithm.advantage: <name>`."""

    def decorator(fn: Estimator) -> Estimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return decorator


def _group_estimator(mode: str) -> Estimator:
    def estimate(inputs: AdvantageInputs, algo) -> Advantages:
        return Advantages(group_advantages(inputs.rewards, inputs.group_size, mode, inputs.valid))

    estimate.__doc__ = f"§1 {mode}: `group_advantages(rewards, G, {mode!r})`, one advantage per completion."
    return estimate


for _mode in GROUP_MODES:
    register_advantage(_mode)(_group_estimator(_mode))


@register_advantage("reinforce")
def _reinforce(inputs: AdvantageInputs, algo) -> Advantages:
    """§1 REINFORCE, with the batch-mean baseline when `algorithm.reinforce_baseline`."""
    return Advantages(reinforce_advantages(inputs.rewards, algo.reinforce_baseline, inputs.valid))


@register_advantage("gae")
def _gae(inputs: AdvantageInputs, algo) -> Advantages:
    """§1 PPO: per-token rewards (with the KL penalty when `algorithm.kl_in_reward`), GAE against
    the critic's V_old, then whitening over the batch."""
    rewards = inputs.rewards if inputs.valid is None else torch.where(inputs.valid, inputs.rewards, 0.0)
    kl = torch.zeros_like(inputs.mask, dtype=torch.float32)
    if algo.kl_in_reward and inputs.logp_ref is not None:
        kl = kl_estimate(inputs.logp, inputs.logp_ref, algo.kl_estimator, inputs.mask)
    token_rewards = kl_penalized_token_rewards(rewards, kl, inputs.mask,
                                               algo.kl_coef if algo.kl_in_reward else 0.0)
    adv, returns = gae_advantages(token_rewards, inputs.values, inputs.mask, algo.gamma, algo.lam)
    return Advantages(whiten(adv, inputs.mask), returns)


def compute_advantages(algo, inputs: AdvantageInputs) -> Advantages:
    """§1 the advantages of `algorithm.advantage` (a pure function of its inputs).

    Raises ValueError naming the valid estimators for an unknown name.
    """
    if algo.advantage not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {algo.advantage!r}; "
                         f"valid: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}")
    return ADVANTAGE_ESTIMATORS[algo.advantage](inputs, algo)
