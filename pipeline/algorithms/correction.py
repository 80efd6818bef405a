"""Rollout correction, docs/algorithms.md §9: weights for the policy loss of samples that the
learner's `pi_old` did not draw itself (the engine samples with its own kernels and dtype).

A registry like the policy losses (pipeline/algorithms/policy_losses.py): a correction is selected
in the config by its settings' `type` (`algorithm.correction: {type: token_mask, lower: 0.5}`);
its settings class holds the defaults, the only place they live, and rejects keys the variant
does not use. Every correction has one signature,

    fn(log_ratio, mask, settings) -> (weights, stats)

with `log_ratio = logp_old - logp_engine` [B, T] (0 where `mask` is False), and
`correction_weights` zeroes the weights of masked positions and adds `train/tis_weight_mean`.

    weights, stats = correction_weights(TokenMaskSettings(), logp_old, logp_engine, mask)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from pipeline.algorithms.losses import kl_estimate, masked_mean

__all__ = ["CORRECTIONS", "CorrectionSettings", "correction_weights", "mismatch_stats", "register_correction"]


class CorrectionSettingsBase(BaseModel):
    """Settings of one correction; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NoCorrectionSettings(CorrectionSettingsBase):
    """No correction: the engine's samples are treated as the learner's."""

    type: Literal["none"] = "none"
    """Selects this correction: every weight is 1 (§9)."""


class TokenTruncateSettings(CorrectionSettingsBase):
    """Token-level truncated importance sampling (Yao et al. 2025, TIS)."""

    type: Literal["token_truncate"] = "token_truncate"
    """Selects this correction: `w_it = min(r_it, C)` (§9)."""
    cap: float = Field(2.0, gt=1.0)
    """C: token ratios above it are truncated to it."""


class SequenceTruncateSettings(CorrectionSettingsBase):
    """Sequence-level truncated importance sampling (Liu et al. 2025; verl's `seq_is`)."""

    type: Literal["sequence_truncate"] = "sequence_truncate"
    """Selects this correction: `w_i = min(prod_t r_it, C)` on every token of row i (§9)."""
    cap: float = Field(2.0, gt=1.0)
    """C: sequence ratios (the product of the token ratios) above it are truncated to it."""


class TokenMaskSettings(CorrectionSettingsBase):
    """Token-level masked importance sampling (IcePop, Ling Team 2025)."""

    type: Literal["token_mask"] = "token_mask"
    """Selects this correction: `w_it = r_it` inside [lower, upper], 0 outside (§9)."""
    lower: float = Field(0.5, gt=0.0, lt=1.0)
    """alpha: tokens whose ratio is below it are masked (IcePop's 0.5)."""
    upper: float = Field(5.0, gt=1.0)
    """beta: tokens whose ratio is above it are masked (IcePop's 5)."""


class SequenceMaskSettings(CorrectionSettingsBase):
    """Sequence-level rejection on the geometric-mean ratio (verl's `geo_rs`)."""

    type: Literal["sequence_mask"] = "sequence_mask"
    """Selects this correction: rows whose geometric-mean ratio leaves [lower, upper] are masked (§9)."""
    lower: float = Field(0.5, gt=0.0, lt=1.0)
    """Rows whose geometric-mean ratio is below it are masked."""
    upper: float = Field(2.0, gt=1.0)
    """Rows whose geometric-mean ratio is above it are masked."""


CorrectionSettings = Annotated[
    Union[NoCorrectionSettings, TokenTruncateSettings, SequenceTruncateSettings, TokenMaskSettings,
          SequenceMaskSettings],
    Field(discriminator="type"),
]
"""Any correction's settings; `type` selects the correction."""

CorrectionFn = Callable[[Tensor, Tensor, CorrectionSettingsBase], tuple[Tensor, dict[str, float]]]


@dataclass(frozen=True)
class RegisteredCorrection:
    settings: type[CorrectionSettingsBase]
    fn: CorrectionFn


CORRECTIONS: dict[str, RegisteredCorrection] = {}
"""type name -> (settings class, weight function)."""


def register_correction(settings: type[CorrectionSettingsBase]) -> Callable[[CorrectionFn], CorrectionFn]:
    """Decorator: register `fn` as the correction whose settings class is `settings` (named by its `type`)."""

    def decorator(fn: CorrectionFn) -> CorrectionFn:
        name = settings.model_fields["type"].default
        if name in CORRECTIONS:
            raise ValueError(f"correction {name!r} is already registered")
        CORRECTIONS[name] = RegisteredCorrection(settings, fn)
        return fn

    return decorator


# ---------------------------------------------------------------------------- the variants


def _row_frac(flags: Tensor, mask: Tensor) -> float:
    """Share of the rows with at least one unmasked token whose flag [B] is set."""
    return masked_mean(flags.float(), mask.any(-1)).item()


@register_correction(NoCorrectionSettings)
def no_correction(log_ratio: Tensor, mask: Tensor, s: NoCorrectionSettings):
    """§9 `w_it = 1`."""
    return torch.ones_like(log_ratio), {}


@register_correction(TokenTruncateSettings)
def token_truncate(log_ratio: Tensor, mask: Tensor, s: TokenTruncateSettings):
    """§9 `w_it = min(r_it, C)`; stat `train/tis_truncated_frac`: share of tokens with `r_it > C`."""
    log_cap = math.log(s.cap)
    return (torch.exp(log_ratio.clamp(max=log_cap)),
            {"train/tis_truncated_frac": masked_mean((log_ratio > log_cap).float(), mask).item()})


@register_correction(SequenceTruncateSettings)
def sequence_truncate(log_ratio: Tensor, mask: Tensor, s: SequenceTruncateSettings):
    """§9 `w_i = min(exp(sum_t log r_it), C)` on every token of row i (computed in log space: the
    product never overflows); stat `train/tis_truncated_frac`: share of rows with `prod_t r_it > C`."""
    log_cap, seq = math.log(s.cap), log_ratio.sum(-1)
    weights = torch.exp(seq.clamp(max=log_cap))[:, None].expand_as(log_ratio)
    return weights, {"train/tis_truncated_frac": _row_frac(seq > log_cap, mask)}


@register_correction(TokenMaskSettings)
def token_mask(log_ratio: Tensor, mask: Tensor, s: TokenMaskSettings):
    """§9 IcePop `w_it = r_it` if `lower <= r_it <= upper`, else 0; stat `train/tis_masked_frac`:
    share of tokens masked."""
    ratio = torch.exp(log_ratio)
    keep = (ratio >= s.lower) & (ratio <= s.upper)
    return torch.where(keep, ratio, 0.0), {"train/tis_masked_frac": masked_mean((~keep).float(), mask).item()}


@register_correction(SequenceMaskSettings)
def sequence_mask(log_ratio: Tensor, mask: Tensor, s: SequenceMaskSettings):
    """§9 `w_it = 1` if `lower <= exp(mean_t log r_it) <= upper`, else 0 for the whole row; stat
    `train/tis_masked_frac`: share of rows masked."""
    geo = torch.exp(log_ratio.sum(-1) / mask.sum(-1).clamp(min=1))
    keep = (geo >= s.lower) & (geo <= s.upper)
    return keep[:, None].float().expand_as(log_ratio), {"train/tis_masked_frac": _row_frac(~keep, mask)}


# ---------------------------------------------------------------------------- the entry points


def correction_weights(
    settings: CorrectionSettingsBase, logp_old: Tensor, logp_engine: Tensor, mask: Tensor,
) -> tuple[Tensor, dict[str, float]]:
    """§9 the weights [B, T] (no gradient, 0 where `mask` is False) of the per-token policy losses.

    `logp_old`: the learner's log-probs of the sampled tokens under the weights that sampled them;
    `logp_engine`: the engine's (the behaviour policy); `mask`: the tokens that count, [B, T]
    each. The token ratio is `r_it = exp(logp_old - logp_engine)`. Stats: `train/tis_weight_mean`
    (mean weight over the unmasked tokens) and the variant's own (`train/tis_truncated_frac`,
    `train/tis_masked_frac`).
    """
    mask = mask.bool()
    log_ratio = torch.where(mask, logp_old.detach() - logp_engine.detach(), 0.0)
    weights, stats = CORRECTIONS[settings.type].fn(log_ratio, mask, settings)
    weights = torch.where(mask, weights, 0.0)
    stats["train/tis_weight_mean"] = masked_mean(weights, mask).item()
    return weights, stats


def mismatch_stats(logp_old: Tensor, logp_engine: Tensor, mask: Tensor) -> dict[str, float]:
    """§9 mismatch between learner and engine log-probs of the engine's samples.

    `mismatch/mean_abs`: mean |logp_old - logp_engine|; `mismatch/kl`: k3 estimate of
    KL(engine || learner).
    """
    mask = mask.bool()
    diff = torch.where(mask, logp_old - logp_engine, 0.0).detach()
    kl = kl_estimate(logp_engine.detach(), logp_old.detach(), "k3", mask)
    return {"mismatch/mean_abs": masked_mean(diff.abs(), mask).item(),
            "mismatch/kl": masked_mean(kl, mask).item()}
