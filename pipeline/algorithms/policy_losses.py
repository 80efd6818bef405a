"""Policy losses, docs/algorithms.md §2-4: a registry of one function per paper, each with its own
typed settings.

A loss is selected in the config by its settings' `type` (`algorithm.policy_loss.type: dapo`);
its settings class holds the paper's defaults, the only place they live, and rejects keys the
loss does not use. Every loss has one signature,

    fn(logp, logp_old, advantages, mask, settings) -> (per_token_loss, ratio, stats)

with [B, T] tensors (`advantages` already broadcast to [B, T] and 0 where `mask` is False), and
`policy_loss` weighs the per-token losses by the TIS weights (§9) and aggregates them (§4).
KL, entropy and value terms are separate terms the learner adds (pipeline/algorithms/regularisers.py).

    settings = DAPOSettings(eps_high=0.3)
    loss, stats = policy_loss(settings, logp, logp_old, advantages, mask, "token-mean")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from pipeline.algorithms.losses import aggregate, gspo_sequence_ratio, gspo_token_ratio, masked_mean, token_ratio

__all__ = ["POLICY_LOSSES", "PolicyLossSettings", "policy_loss", "register_policy_loss"]


class LossSettings(BaseModel):
    """Settings of one policy loss; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class PPOClipSettings(LossSettings):
    """PPO's symmetric clip (Schulman et al. 2017), optionally dual-clipped (Ye et al. 2020)."""

    type: Literal["ppo_clip"] = "ppo_clip"
    """Selects this loss: PPO's clip (§3)."""
    eps: float = Field(0.2, gt=0.0)
    """Clip range: ratios outside [1 - eps, 1 + eps] stop moving the loss."""
    dual_clip_c: float | None = Field(None, gt=1.0)
    """Dual clip: the loss of a negative-advantage token is at most -c*A (None: off)."""


class DAPOSettings(LossSettings):
    """DAPO's clip-higher (Yu et al. 2025): a wider upper bound keeps rare tokens learnable."""

    type: Literal["dapo"] = "dapo"
    """Selects this loss: DAPO's clip-higher (§3)."""
    eps_low: float = Field(0.2, gt=0.0)
    """Lower clip: ratios below 1 - eps_low stop moving the loss of A < 0 tokens."""
    eps_high: float = Field(0.28, gt=0.0)
    """Upper clip: ratios above 1 + eps_high stop moving the loss of A > 0 tokens."""
    dual_clip_c: float | None = Field(None, gt=1.0)
    """Dual clip: the loss of a negative-advantage token is at most -c*A (None: off)."""


class GSPOSettings(LossSettings):
    """GSPO (Zheng et al. 2025): one length-normalised sequence ratio, clipped in a narrow band."""

    type: Literal["gspo"] = "gspo"
    """Selects this loss: GSPO's sequence ratio (§2-3)."""
    eps_low: float = Field(3e-4, gt=0.0)
    """Lower clip of the sequence ratio."""
    eps_high: float = Field(4e-4, gt=0.0)
    """Upper clip of the sequence ratio."""


class GSPOTokenSettings(GSPOSettings):
    """GSPO-token: the sequence ratio's value with per-token gradients (token-level advantages)."""

    type: Literal["gspo_token"] = "gspo_token"  # type: ignore[assignment]
    """Selects this loss: GSPO-token (§2-3)."""


class SAPOSettings(LossSettings):
    """SAPO: a soft sigmoid gate instead of a hard clip."""

    type: Literal["sapo"] = "sapo"
    """Selects this loss: SAPO's soft gate (§3)."""
    tau_pos: float = Field(1.0, gt=0.0)
    """Gate temperature for positive advantages."""
    tau_neg: float = Field(1.05, gt=0.0)
    """Gate temperature for negative advantages (sharper: bad tokens fade faster)."""


PolicyLossSettings = Annotated[
    Union[PPOClipSettings, DAPOSettings, GSPOSettings, GSPOTokenSettings, SAPOSettings],
    Field(discriminator="type"),
]
"""Any policy loss's settings; `type` selects the loss."""

LossFn = Callable[[Tensor, Tensor, Tensor, Tensor, LossSettings], tuple[Tensor, Tensor, dict[str, float]]]


@dataclass(frozen=True)
class RegisteredLoss:
    settings: type[LossSettings]
    fn: LossFn


POLICY_LOSSES: dict[str, RegisteredLoss] = {}
"""type name -> (settings class, loss function)."""


def register_policy_loss(settings: type[LossSettings]) -> Callable[[LossFn], LossFn]:
    """Decorator: register `fn` as the loss whose settings class is `settings` (named by its `type`)."""

    def decorator(fn: LossFn) -> LossFn:
        name = settings.model_fields["type"].default
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = RegisteredLoss(settings, fn)
        return fn

    return decorator


# ---------------------------------------------------------------------------- the formulas


def ppo_clip_loss(
    ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float,
    dual_clip_c: float | None = None,
) -> Tensor:
    """§3 PPO-clip / DAPO clip-higher / GSPO: `-min(r*A, clip(r, 1-eps_low, 1+eps_high)*A)`.

    `eps_low == eps_high` is PPO's symmetric clip. With `dual_clip_c` (§3 dual-clip, Ye et al.
    2020) the loss of A<0 units is capped at `-c*A`: the objective is `max(min(...), c*A)`, so
    the loss is `min(l, -c*A)` (docs/algorithms.md §3 gives both forms).
    """
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = -torch.minimum(ratio * advantages, clipped * advantages)
    if dual_clip_c is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip_c * advantages), loss)
    return loss


def clip_stats(ratio: Tensor, advantages: Tensor, mask: Tensor, eps_low: float, eps_high: float,
               dual_clip_c: float | None) -> dict[str, float]:
    """Share of tokens whose gradient each side of the clip removes (and the dual clip caps)."""
    r = ratio.detach()
    stats = {"clip_frac/low": masked_mean(((advantages < 0) & (r < 1 - eps_low)).float(), mask).item(),
             "clip_frac/high": masked_mean(((advantages > 0) & (r > 1 + eps_high)).float(), mask).item()}
    if dual_clip_c is not None:
        dual = (advantages < 0) & (r > dual_clip_c)
        stats["train/dual_clip_frac"] = masked_mean(dual.float(), mask).item()
    return stats


def _clipped(ratio: Tensor, advantages: Tensor, mask: Tensor, eps_low: float, eps_high: float,
             dual_clip_c: float | None = None) -> tuple[Tensor, Tensor, dict[str, float]]:
    loss = ppo_clip_loss(ratio, advantages, eps_low, eps_high, dual_clip_c)
    return loss, ratio, clip_stats(ratio, advantages, mask, eps_low, eps_high, dual_clip_c)


@register_policy_loss(PPOClipSettings)
def ppo_clip(logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor, s: PPOClipSettings):
    """§3 PPO-clip on the token ratio (§2)."""
    return _clipped(token_ratio(logp, logp_old, mask), advantages, mask, s.eps, s.eps, s.dual_clip_c)


@register_policy_loss(DAPOSettings)
def dapo(logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor, s: DAPOSettings):
    """§3 DAPO clip-higher on the token ratio (§2)."""
    return _clipped(token_ratio(logp, logp_old, mask), advantages, mask, s.eps_low, s.eps_high, s.dual_clip_c)


@register_policy_loss(GSPOSettings)
def gspo(logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor, s: GSPOSettings):
    """§3 GSPO: the clip applied to the sequence ratio `s_i` (§2), repeated on every token."""
    ratio = gspo_sequence_ratio(logp, logp_old, mask)[:, None].expand_as(logp)
    return _clipped(ratio, advantages, mask, s.eps_low, s.eps_high)


@register_policy_loss(GSPOTokenSettings)
def gspo_token(logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor, s: GSPOTokenSettings):
    """§3 GSPO-token: the clip applied to `s_it` (§2), whose value is `s_i` on every token."""
    return _clipped(gspo_token_ratio(logp, logp_old, mask), advantages, mask, s.eps_low, s.eps_high)


def sapo_gate_weight(ratio: Tensor, tau: Tensor) -> Tensor:
    """§3 SAPO gradient weight `w = 4*p*(1-p)` with `p = sigmoid(tau*(r-1))`.

    Equal to `sech^2(tau*(r-1)/2)`, the derivative of SAPO's `f`; `w(1) = 1`.
    """
    p = torch.sigmoid(tau * (ratio - 1.0))
    return 4.0 * p * (1.0 - p)


def sapo_tau(advantages: Tensor, tau_pos: float, tau_neg: float) -> Tensor:
    """§3 SAPO temperature: `tau = tau_pos if A > 0 else tau_neg`."""
    return torch.where(advantages > 0, tau_pos, tau_neg)


def sapo_loss(ratio: Tensor, advantages: Tensor, tau_pos: float, tau_neg: float) -> Tensor:
    """§3 SAPO `l_it = -f(r_it)*A_i`, `f(x) = sigmoid(tau*(x-1)) * 4/tau`."""
    tau = sapo_tau(advantages, tau_pos, tau_neg)
    return -torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * advantages


@register_policy_loss(SAPOSettings)
def sapo(logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor, s: SAPOSettings):
    """§3 SAPO on the token ratio (§2); stat `sapo/gate_mean`, the mean gradient weight w."""
    ratio = token_ratio(logp, logp_old, mask)
    gate = sapo_gate_weight(ratio.detach(), sapo_tau(advantages, s.tau_pos, s.tau_neg))
    return sapo_loss(ratio, advantages, s.tau_pos, s.tau_neg), ratio, {"sapo/gate_mean": masked_mean(gate, mask).item()}


# ---------------------------------------------------------------------------- the objective


def policy_loss(
    settings: LossSettings, logp: Tensor, logp_old: Tensor, advantages: Tensor, mask: Tensor,
    agg: str = "token-mean", *, tis_weights: Tensor | None = None,
    num_tokens: int | None = None, num_seqs: int | None = None, max_len: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The loss selected by `settings` (§3), weighted by `tis_weights` (§9) and aggregated (§4).

    `logp`, `logp_old`, `mask`, `tis_weights`: [B, T]; `advantages`: [B] (one per sequence) or
    [B, T]. `num_tokens`, `num_seqs`, `max_len`: the optimiser step's normalisers (see
    `aggregate`). Returns the loss (a scalar with gradient) and stats (python floats):
    `train/pg_loss`, `train/ratio_mean`, and the loss's own (`clip_frac/low`, `clip_frac/high`,
    `train/dual_clip_frac`, `sapo/gate_mean`). Raises ValueError for an unknown aggregation.
    """
    mask, logp_old, adv = mask.bool(), logp_old.detach(), advantages.detach()
    adv = torch.where(mask, adv[:, None] if adv.dim() == 1 else adv, 0.0)
    per_token, ratio, stats = POLICY_LOSSES[settings.type].fn(logp, logp_old, adv, mask, settings)
    if tis_weights is not None:
        per_token = per_token * torch.where(mask, tis_weights.detach(), 0.0)
    loss = aggregate(per_token, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs, max_len=max_len)
    stats["train/pg_loss"] = loss.item()
    stats["train/ratio_mean"] = masked_mean(ratio.detach(), mask).item()
    return loss, stats
