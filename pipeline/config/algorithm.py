"""The `algorithm` section: a paper's preset plus the user's keys, with typed policy-loss and
correction settings (docs/algorithms.md §1-9)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.algorithms.correction import CORRECTIONS, CorrectionSettings, TokenTruncateSettings
from pipeline.algorithms.policy_losses import POLICY_LOSSES, PolicyLossSettings, PPOClipSettings
from pipeline.algorithms.presets import ALGORITHM_PRESETS
from pipeline.config.base import Section


AdvantageName = Literal["grpo", "dr_grpo", "rloo", "reinforce", "gae"]
"""The estimators of pipeline/algorithms/advantages.py's registry (a test keeps the two equal)."""
GROUP_ADVANTAGES = ("grpo", "dr_grpo", "rloo")
AggName = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
TYPED_KEYS: dict[str, dict[str, Any]] = {"policy_loss": POLICY_LOSSES, "correction": CORRECTIONS}
"""`algorithm` keys whose settings are typed, selected by `type` (a bare name allowed) -> their registry."""


class AlgorithmConfig(Section):
    """docs/algorithms.md §1-9. Fields left unset take the preset's value; the policy loss's own
    settings take its paper's defaults (pipeline/algorithms/policy_losses.py)."""

    preset: str = "grpo"
    """A paper's recipe (pipeline/algorithms/presets.py): grpo, dr_grpo, dapo, gspo, gspo_token, sapo, ppo, reinforce, rloo."""
    advantage: AdvantageName = "grpo"
    """Advantage estimator (§1): group mean/std (grpo), group mean (dr_grpo), leave-one-out (rloo), batch baseline (reinforce), GAE with a critic (gae)."""
    reinforce_baseline: bool = False
    """`reinforce`: subtract the batch-mean reward (§1)."""
    policy_loss: PolicyLossSettings = Field(default_factory=PPOClipSettings)
    """The policy loss and its settings, e.g. `{type: dapo, eps_high: 0.3}` (a bare name selects
    the loss with its defaults)."""
    loss_agg: AggName = "seq-mean-token-mean"
    """How token losses become one number (§4): token-mean (DAPO), seq-mean-token-mean (GRPO), seq-mean-token-sum-norm (Dr.GRPO)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """beta: weight of the KL penalty to the reference policy (§5; 0 = no reference pass)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator (§5): k1 = log-ratio, k2 = half its square, k3 = the unbiased low-variance one."""
    kl_in_reward: bool = False
    """Put the KL penalty into the reward (PPO/RLHF style) instead of the loss (§5)."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Weight of the entropy bonus (§6)."""
    correction: CorrectionSettings = Field(default_factory=TokenTruncateSettings)
    """Off-policy correction of the policy loss for the engine's samples (§9): truncate or mask the
    importance ratio per token or per sequence, e.g. `{type: token_mask, lower: 0.5, upper: 5.0}`
    (a bare name selects the variant with its defaults)."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling (§8): drop groups whose rewards are all equal and sample more."""
    max_num_gen_batches: int = Field(3, ge=1)
    """Dynamic sampling: at most this many generation rounds per step."""
    overlong_filter: bool = False
    """Mask completions cut at `rollout.max_tokens` out of the loss (DAPO; TRL's mask_truncated_completions)."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """GAE discount (§1)."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE lambda (§1)."""
    value_clip: float = Field(0.2, gt=0.0)
    """Clip range of the critic's value update (PPO's clipped value loss)."""
    vf_coef: float = Field(0.5, ge=0.0)
    """Weight of the value loss (advantage `gae`)."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {**ALGORITHM_PRESETS.get(data.get("preset", "grpo"), {}), **data}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in ALGORITHM_PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(ALGORITHM_PRESETS))}")
        return name

    @field_validator(*TYPED_KEYS, mode="before")
    @classmethod
    def _typed_over_preset(cls, given: Any, info: ValidationInfo) -> Any:
        key = info.field_name
        preset = ALGORITHM_PRESETS.get(info.data.get("preset", "grpo"), {})
        default = cls.model_fields[key].default_factory().type
        return _typed_settings(key, default, preset.get(key), given)

    @model_validator(mode="after")
    def _check_kl_in_reward(self) -> AlgorithmConfig:
        if self.kl_in_reward and self.kl_coef > 0 and not self.uses_critic:
            raise ValueError("kl_in_reward puts the KL penalty into per-token rewards, which only the "
                             "'gae' advantage reads; use it with advantage: gae, or set kl_in_reward: false")
        return self

    # Decisions derived from the settings, made here once.
    @property
    def uses_critic(self) -> bool:
        """A value head is trained (GAE advantages, PPO)."""
        return self.advantage == "gae"

    @property
    def group_advantage(self) -> bool:
        """Advantages compare completions of one prompt (needs group_size >= 2)."""
        return self.advantage in GROUP_ADVANTAGES

    @property
    def needs_reference(self) -> bool:
        """The reference policy's log-probs are computed (a KL term, §5)."""
        return self.kl_coef > 0

    @property
    def kl_loss_coef(self) -> float:
        """The KL coefficient in the loss (0 when the KL penalty is in the reward instead)."""
        return 0.0 if self.kl_in_reward else self.kl_coef

    @property
    def advantage_only_loss(self) -> bool:
        """Every loss term is a multiple of the advantage (no KL in the loss, entropy or value term):
        rows with A = 0 add exactly zero gradient (§13)."""
        return self.entropy_coef == 0 and not self.uses_critic and self.kl_loss_coef == 0


def types_with(key: str, setting: str) -> list[str]:
    """The types of `algorithm.<key>` (a TYPED_KEYS key) that have `setting`, e.g. eps_high -> dapo, gspo, ..."""
    return [name for name, entry in TYPED_KEYS[key].items() if setting in entry.settings.model_fields]


def typed_setting_hint(key: str, setting: str) -> str:
    """How to set a typed setting: `algorithm.policy_loss={type: dapo, eps_high: ...}` (and the other
    types that have it); "" when no type has `setting`."""
    types = types_with(key, setting) if setting != "type" else []
    if not types:
        return ""
    others = f" (or type {', '.join(types[1:])})" if len(types) > 1 else ""
    return f"algorithm.{key}={{type: {types[0]}, {setting}: ...}}{others}"


def _typed_settings(key: str, default: str, preset: dict[str, Any] | None, given: Any) -> Any:
    """The user's `algorithm.<key>` (a name or a mapping with `type`; key in TYPED_KEYS) over the
    preset's: the preset's settings apply only when the user keeps its type; a key the chosen type
    does not use is an error. `default` is the type when neither side names one."""
    if isinstance(given, str):
        given = {"type": given}
    if not isinstance(given, dict):
        return given
    registry, noun = TYPED_KEYS[key], key.split("_")[-1]  # "loss", "correction"
    preset = preset or {}
    name = given.get("type", preset.get("type", default))
    if name not in registry:
        raise ValueError(f"unknown {key.replace('_', ' ')} {name!r}; valid: {', '.join(registry)}")
    fields = registry[name].settings.model_fields
    unknown = sorted(set(given) - set(fields))
    if unknown:
        own = ", ".join(k for k in fields if k != "type") or "(none)"
        elsewhere = typed_setting_hint(key, unknown[0])
        raise ValueError(f"the {name!r} {noun} has no setting {', '.join(map(repr, unknown))}; "
                         f"its settings: {own}" + (f"; set it with {elsewhere}" if elsewhere else ""))
    base = preset if preset.get("type", default) == name else {}
    return {**base, **given, "type": name}

