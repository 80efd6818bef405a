"""The typed config: YAML + overrides, presets, and errors that name the key."""

import re
import typing
from pathlib import Path

import pytest

from pipeline.config import (AdvantageName, AlgorithmConfig, Config, ConfigError, load_config, parse_overrides,
                             save_config)
from pipeline.algorithms.correction import (CORRECTIONS, CorrectionSettings, SequenceMaskSettings,
                                            SequenceTruncateSettings, TokenMaskSettings, TokenTruncateSettings)
from pipeline.algorithms.policy_losses import POLICY_LOSSES, DAPOSettings, PolicyLossSettings, PPOClipSettings, SAPOSettings
from pipeline.algorithms.presets import ALGORITHM_PRESETS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_validate():
    config = load_config()
    assert config.rl.group_size == 8
    assert config.algorithm.preset == "grpo"
    assert config.algorithm.advantage == "grpo"


def test_overrides_parse_yaml_scalars():
    tree = parse_overrides(["rl.lr=2e-6", "rollout.stop=['</s>']", "lora.enabled=false"])
    assert tree == {"rl": {"lr": 2e-6}, "rollout": {"stop": ["</s>"]}, "lora": {"enabled": False}}


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rl:\n  lr: 1.0e-5\n  steps: 3\nalgorithm:\n  preset: dapo\n")
    config = load_config(path, ["rl.lr=2e-6"])
    assert config.rl.lr == 2e-6 and config.rl.steps == 3


def test_preset_fills_unset_keys_and_user_keys_win():
    config = load_config(None, ["algorithm.preset=dapo", "algorithm.policy_loss.eps_high=0.3"])
    assert config.algorithm.policy_loss == DAPOSettings(eps_low=0.2, eps_high=0.3)
    assert config.algorithm.loss_agg == "token-mean"
    assert config.algorithm.dynamic_sampling is True


# ---------------------------------------------------------------- typed policy-loss settings


def test_a_setting_the_presets_loss_does_not_use_names_the_loss():
    # the bug: DAPO silently trained with 0.2/0.28 and ignored eps
    with pytest.raises(ConfigError, match=r"algorithm\.policy_loss: the 'dapo' loss has no setting 'eps'.*eps_low"):
        load_config(None, ["algorithm.preset=dapo", "algorithm.policy_loss.eps=0.05"])
    with pytest.raises(ConfigError, match="'sapo' loss has no setting 'eps_high'"):
        load_config(None, ["algorithm.preset=sapo", "algorithm.policy_loss.eps_high=0.3"])
    with pytest.raises(ConfigError, match="'ppo_clip' loss has no setting 'eps_low'"):
        load_config(None, ["algorithm.policy_loss.eps_low=0.1"])  # grpo: PPO's symmetric clip


def test_a_setting_of_another_loss_type_names_that_loss(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  preset: grpo\n  policy_loss: {type: gspo, tau_pos: 2.0}\n")
    with pytest.raises(ConfigError, match="'gspo' loss has no setting 'tau_pos'"):
        load_config(path)


def test_the_flat_clip_keys_are_gone():
    for key in ("eps", "eps_low", "eps_high", "dual_clip_c", "tau_pos", "tau_neg"):
        with pytest.raises(ConfigError, match=f"unknown key 'algorithm.{key}'"):
            load_config(None, [f"algorithm.{key}=0.3"])


def test_unknown_policy_loss_lists_valid_ones():
    for override in ("algorithm.policy_loss=ppo", "algorithm.policy_loss.type=ppo"):
        with pytest.raises(ConfigError, match="unknown policy loss 'ppo'.*ppo_clip, dapo"):
            load_config(None, [override])


def test_out_of_range_setting_names_the_key():
    with pytest.raises(ConfigError, match=r"algorithm\.policy_loss.*eps_high"):
        load_config(None, ["algorithm.preset=dapo", "algorithm.policy_loss.eps_high=-1"])


def test_one_side_of_dapos_clip_keeps_the_other():
    config = load_config(None, ["algorithm.preset=dapo", "algorithm.policy_loss.eps_low=0.1"])
    assert config.algorithm.policy_loss == DAPOSettings(eps_low=0.1, eps_high=0.28)


def test_a_bare_loss_name_takes_the_losss_defaults(tmp_path):
    config = load_config(None, ["algorithm.policy_loss=dapo"])
    assert config.algorithm.policy_loss == DAPOSettings()
    assert config.algorithm.preset == "grpo" and config.algorithm.kl_coef == 0.04  # the rest: grpo's
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  policy_loss: dapo\n")  # a name in YAML, a setting on the command line
    config = load_config(path, ["algorithm.policy_loss.eps_high=0.3"])
    assert config.algorithm.policy_loss == DAPOSettings(eps_high=0.3)


def test_switching_the_loss_type_drops_the_presets_settings(monkeypatch):
    # gspo and dapo share key names: dapo gets its own defaults, not gspo's 3e-4 / 4e-4
    config = load_config(None, ["algorithm.preset=gspo", "algorithm.policy_loss.type=dapo"])
    assert config.algorithm.policy_loss == DAPOSettings()
    # a preset with its own settings: they apply while its loss type is kept
    monkeypatch.setitem(ALGORITHM_PRESETS, "dapo", {**ALGORITHM_PRESETS["dapo"], "policy_loss": {"type": "dapo", "eps_high": 0.3}})
    kept = load_config(None, ["algorithm.preset=dapo", "algorithm.policy_loss.eps_low=0.1"])
    assert kept.algorithm.policy_loss == DAPOSettings(eps_low=0.1, eps_high=0.3)
    switched = load_config(None, ["algorithm.preset=dapo", "algorithm.policy_loss.type=ppo_clip",
                                  "algorithm.policy_loss.eps=0.1"])
    assert switched.algorithm.policy_loss == PPOClipSettings(eps=0.1)
    assert load_config(None, ["algorithm.preset=dapo", "algorithm.policy_loss=sapo"]).algorithm.policy_loss \
        == SAPOSettings()


@pytest.mark.parametrize("loss", list(POLICY_LOSSES))
@pytest.mark.parametrize("preset", sorted(ALGORITHM_PRESETS))
def test_preset_filled_keys_never_error(monkeypatch, preset, loss):
    # every preset, with settings for its loss, combined with every loss type the user may pick
    own = ALGORITHM_PRESETS[preset]["policy_loss"]["type"]
    filled = {k: v.default * 1.5 if isinstance(v.default, float) else v.default
              for k, v in POLICY_LOSSES[own].settings.model_fields.items() if k != "type"}
    monkeypatch.setitem(ALGORITHM_PRESETS, preset, {**ALGORITHM_PRESETS[preset], "policy_loss": {"type": own, **filled}})
    assert load_config(None, [f"algorithm.preset={preset}"]).algorithm.policy_loss.model_dump() \
        == {"type": own, **filled}
    config = load_config(None, [f"algorithm.preset={preset}", f"algorithm.policy_loss.type={loss}"])
    expected = {"type": own, **filled} if loss == own else POLICY_LOSSES[loss].settings().model_dump()
    assert config.algorithm.policy_loss.model_dump() == expected


def test_policy_loss_settings_union_equals_the_registry():
    members = typing.get_args(typing.get_args(PolicyLossSettings)[0])
    assert {m.model_fields["type"].default: m for m in members} == \
        {name: entry.settings for name, entry in POLICY_LOSSES.items()}


# ---------------------------------------------------------------- typed rollout-correction settings (§9)


def test_correction_defaults_and_selection(tmp_path):
    assert load_config().algorithm.correction == TokenTruncateSettings(cap=2.0)
    config = load_config(None, ["algorithm.correction.type=token_mask", "algorithm.correction.upper=3"])
    assert config.algorithm.correction == TokenMaskSettings(lower=0.5, upper=3.0)
    assert load_config(None, ["algorithm.correction=sequence_truncate"]).algorithm.correction \
        == SequenceTruncateSettings(cap=2.0)
    path = tmp_path / "c.yaml"
    path.write_text("algorithm:\n  correction: sequence_mask\n")  # a name in YAML, a bound on the command line
    assert load_config(path, ["algorithm.correction.lower=0.8"]).algorithm.correction \
        == SequenceMaskSettings(lower=0.8, upper=2.0)
    path.write_text("algorithm:\n  correction: {type: token_mask, lower: 0.2, upper: 10}\n")
    assert load_config(path).algorithm.correction == TokenMaskSettings(lower=0.2, upper=10.0)
    assert load_config(None, ["algorithm.correction=none"]).algorithm.correction.type == "none"


@pytest.mark.parametrize("override, key", [
    (["algorithm.correction.type=token_mask", "algorithm.correction.lower=1.0"], "lower"),
    (["algorithm.correction.type=token_mask", "algorithm.correction.lower=0"], "lower"),
    (["algorithm.correction.type=token_mask", "algorithm.correction.upper=0.9"], "upper"),
    (["algorithm.correction.type=sequence_mask", "algorithm.correction.upper=1"], "upper"),
    (["algorithm.correction.type=sequence_mask", "algorithm.correction.lower=1.5"], "lower"),
    (["algorithm.correction.cap=1"], "cap"),
    (["algorithm.correction.type=sequence_truncate", "algorithm.correction.cap=0.5"], "cap"),
])
def test_correction_bounds_are_checked_at_load(override, key):
    # lower < 1 < upper, cap > 1: a band that excludes ratio 1 would mask on-policy tokens
    with pytest.raises(ConfigError, match=rf"algorithm\.correction\.\w+\.{key}: Input should be"):
        load_config(None, override)


def test_a_setting_the_correction_does_not_use_names_it():
    with pytest.raises(ConfigError, match=r"algorithm\.correction: the 'token_truncate' correction has no "
                                          r"setting 'lower'; its settings: cap"):
        load_config(None, ["algorithm.correction.lower=0.3"])
    with pytest.raises(ConfigError, match="the 'token_mask' correction has no setting 'cap'; its settings: lower, upper"):
        load_config(None, ["algorithm.correction.type=token_mask", "algorithm.correction.cap=3"])
    with pytest.raises(ConfigError, match="unknown correction 'icepop'; valid: none, token_truncate"):
        load_config(None, ["algorithm.correction=icepop"])


@pytest.mark.parametrize("key, expected", [("tis=token_mask", "algorithm.correction"),
                                           ("tis_cap=3", "algorithm.correction={type: token_truncate, cap: ..."),
                                           ("tis_lower=0.5", "algorithm.correction={type: token_mask, lower: ..."),
                                           ("tis_upper=5", "algorithm.correction={type: token_mask, upper: ...")])
def test_the_flat_tis_keys_are_gone(key, expected):
    with pytest.raises(ConfigError, match=re.escape(f"unknown key 'algorithm.{key.split('=')[0]}' (did you mean '{expected}")):
        load_config(None, [f"algorithm.{key}"])


def test_correction_settings_union_equals_the_registry():
    members = typing.get_args(typing.get_args(CorrectionSettings)[0])
    assert {m.model_fields["type"].default: m for m in members} == \
        {name: entry.settings for name, entry in CORRECTIONS.items()}
    assert set(CORRECTIONS) == {"none", "token_truncate", "sequence_truncate", "token_mask", "sequence_mask"}


def test_advantage_names_equal_the_registry():
    from pipeline.algorithms.advantages import ADVANTAGE_ESTIMATORS

    assert set(typing.get_args(AdvantageName)) == set(ADVANTAGE_ESTIMATORS)


# ---------------------------------------------------------------- decisions derived once


@pytest.mark.parametrize("overrides, uses_critic, group, reference, kl_loss_coef, advantage_only", [
    (["algorithm.preset=grpo"], False, True, True, 0.04, False),
    (["algorithm.preset=dapo"], False, True, False, 0.0, True),
    (["algorithm.preset=dapo", "algorithm.entropy_coef=0.01"], False, True, False, 0.0, False),
    (["algorithm.preset=rloo"], False, True, False, 0.0, True),
    (["algorithm.preset=reinforce"], False, False, False, 0.0, True),
    (["algorithm.preset=ppo"], True, False, True, 0.0, False),  # KL in the reward, not the loss
    (["algorithm.preset=ppo", "algorithm.kl_in_reward=false"], True, False, True, 0.05, False),
    (["algorithm.preset=ppo", "algorithm.kl_coef=0"], True, False, False, 0.0, False),
])
def test_derived_decisions(overrides, uses_critic, group, reference, kl_loss_coef, advantage_only):
    algo = load_config(None, overrides).algorithm
    assert (algo.uses_critic, algo.group_advantage, algo.needs_reference, algo.kl_loss_coef,
            algo.advantage_only_loss) == (uses_critic, group, reference, kl_loss_coef, advantage_only)


def test_kl_in_reward_needs_gae():
    with pytest.raises(ConfigError, match="kl_in_reward.*'gae'"):
        load_config(None, ["algorithm.kl_in_reward=true", "algorithm.kl_coef=0.1"])
    with pytest.raises(ConfigError, match="kl_in_reward.*'gae'"):
        load_config(None, ["algorithm.preset=ppo", "algorithm.advantage=grpo"])
    assert load_config(None, ["algorithm.kl_in_reward=true", "algorithm.kl_coef=0"]).algorithm.kl_loss_coef == 0


def test_answer_extraction_follows_the_accuracy_term():
    assert load_config().reward.answer_extraction == "boxed"
    config = load_config(None, ["reward.terms=[{name: format}, {name: accuracy, params: {extract: last_number}}]"])
    assert config.reward.answer_extraction == "last_number"
    assert config.reward.params_of("accuracy") == {"extract": "last_number"}
    assert config.reward.params_of("format") == {} and config.reward.params_of("code") == {}


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown key 'rl.lrr' \(did you mean 'rl.lr'\?\)"):
        load_config(None, ["rl.lrr=1"])


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match="unknown key 'rollotu'.*'rollout'"):
        load_config(None, ["rollotu.engine=hf"])


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"rollout\.engine"):
        load_config(None, ["rollout.engine=tensorrt"])
    with pytest.raises(ConfigError, match=r"rl\.lr"):
        load_config(None, ["rl.lr=-1"])


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'grpoo'.*dapo"):
        load_config(None, ["algorithm.preset=grpoo"])


def test_group_of_one_is_rejected_for_group_advantages():
    with pytest.raises(ConfigError, match=r"rl\.group_size=1"):
        load_config(None, ["rl.group_size=1", "rl.mini_batch_size=8", "rl.micro_batch_size=8"])


def test_batch_not_divisible_by_mini_batch_names_the_key():
    with pytest.raises(ConfigError, match=r"rl\.mini_batch_size=48 must divide"):
        load_config(None, ["rl.prompts_per_step=8", "rl.group_size=8", "rl.mini_batch_size=48"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["rl.lr"])


@pytest.mark.parametrize("overrides", [["algorithm.preset=gspo", "rl.steps=7"],
                                       ["algorithm.preset=dapo", "algorithm.policy_loss.eps_high=0.3"],
                                       ["algorithm.preset=dapo", "algorithm.policy_loss=sapo"],
                                       ["algorithm.correction.type=token_mask", "algorithm.correction.upper=3"]])
def test_save_round_trip(tmp_path, overrides):
    config = load_config(None, overrides)
    save_config(config, tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_recipe_validates(path):
    assert isinstance(load_config(path), Config)


# ---- discoverability: docstrings, TRL/verl names, commented YAML ------------------------------------


def _fields(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        yield prefix + name, field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, f"{prefix}{name}.")


def _set_keys(config, prefix=""):
    """The dotted keys of a config instance (sections too), into the policy loss it holds."""
    from pydantic import BaseModel

    for name in type(config).model_fields:
        yield prefix + name
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            yield from _set_keys(value, f"{prefix}{name}.")


def test_every_field_has_a_docstring():
    from pipeline.config import RewardTerm

    keys = [*_fields(Config), *_fields(RewardTerm, "reward.terms[]."),
            *(key for name, loss in POLICY_LOSSES.items()
              for key in _fields(loss.settings, f"algorithm.policy_loss[{name}].")),
            *(key for name, entry in CORRECTIONS.items()
              for key in _fields(entry.settings, f"algorithm.correction[{name}]."))]
    missing = [key for key, field in keys if not (field.description or "").strip()]
    assert len(keys) > 100 and missing == []


@pytest.mark.parametrize("section, override, expected", [
    (None, "num_generations=4", "'rl.group_size'"),
    ("rl", "rl.num_generations=4", "'rl.group_size'"),
    ("rl", "beta=0.04", "'algorithm.kl_coef'"),
    ("rl", "rl.beta=0.04", "'algorithm.kl_coef'"),
    ("dpo", "beta=0.2", "'dpo.beta'"),
    (None, "beta=0.2", "'dpo.beta' or 'algorithm.kl_coef'"),
    ("dpo", "learning_rate=1e-6", "'dpo.lr'"),
    ("sft", "learning_rate=1e-6", "'sft.lr'"),
    ("rl", "learning_rate=1e-6", "'rl.lr'"),
    ("reward_model", "reward_model.learning_rate=1e-6", "'reward_model.lr'"),
    ("rl", "max_completion_length=128", "'rollout.max_tokens'"),
    ("eval", "max_completion_length=128", "'eval.max_tokens'"),
    ("rl", "epsilon_high=0.28", "'algorithm.policy_loss={type: dapo, eps_high: ...} (or type gspo, gspo_token)'"),
    ("rl", "algorithm.clip_ratio_high=0.28", "'algorithm.policy_loss={type: dapo, eps_high: ...} (or type gspo, gspo_token)'"),
    ("rl", "epsilon=0.2", "'algorithm.policy_loss={type: ppo_clip, eps: ...}'"),
    ("rl", "clip_ratio_c=3", "'algorithm.policy_loss={type: ppo_clip, dual_clip_c: ...} (or type dapo)'"),
    # the flat keys before each loss had its own settings
    ("rl", "algorithm.eps=0.1", "'algorithm.policy_loss={type: ppo_clip, eps: ...}'"),
    ("rl", "algorithm.eps_low=0.1", "'algorithm.policy_loss={type: dapo, eps_low: ...} (or type gspo, gspo_token)'"),
    ("rl", "algorithm.eps_high=0.3", "'algorithm.policy_loss={type: dapo, eps_high: ...} (or type gspo, gspo_token)'"),
    ("rl", "algorithm.dual_clip_c=3", "'algorithm.policy_loss={type: ppo_clip, dual_clip_c: ...} (or type dapo)'"),
    ("rl", "algorithm.tau_pos=1", "'algorithm.policy_loss={type: sapo, tau_pos: ...}'"),
    ("rl", "algorithm.tau_neg=1", "'algorithm.policy_loss={type: sapo, tau_neg: ...}'"),
    # TRL's, verl's and ms-swift's names of the rollout correction (§9)
    ("rl", "vllm_importance_sampling_mode=token_mask", "'algorithm.correction'"),
    ("rl", "vllm_importance_sampling_cap=3", "'algorithm.correction={type: token_truncate, cap: ...} (or type sequence_truncate)'"),
    ("rl", "algorithm.rollout_correction.rollout_is=token", "'algorithm.correction'"),
    ("rl", "rollout_is_threshold=2", "'algorithm.correction={type: token_truncate, cap: ...} (or type sequence_truncate)'"),
    ("rl", "rollout_rs_threshold=2", "'algorithm.correction={type: token_mask, upper: ...} (or type sequence_mask)'"),
    ("rl", "rollout_rs_threshold_lower=0.5", "'algorithm.correction={type: token_mask, lower: ...} (or type sequence_mask)'"),
    ("rl", "tis_imp_ratio_cap=2", "'algorithm.correction={type: token_truncate, cap: ...} (or type sequence_truncate)'"),
    ("rl", "rollout_importance_sampling_mode=token_mask", "'algorithm.correction'"),
    ("rl", "per_device_train_batch_size=4", "'rl.micro_batch_size'"),
    ("sft", "per_device_train_batch_size=4", "'sft.micro_batch_size'"),
    ("sft", "num_train_epochs=3", "'sft.epochs'"),
    ("rl", "num_train_epochs=3", "'rl.steps'"),
    ("rl", "temperature=0.7", "'rollout.temperature'"),
    ("eval", "temperature=0.7", "'eval.temperature'"),
    ("rl", "max_prompt_length=256", "'data.max_prompt_tokens'"),
    ("rl", "rollout.n=4", "'rl.group_size'"),
    ("rl", "kl_loss_coef=0.001", "'algorithm.kl_coef'"),
    ("rl", "lora_r=8", "'lora.rank'"),
    ("rl", "rl.temperature=0.7", "'rollout.temperature'"),  # right name, wrong section
    ("rl", "rl.lrr=1", "'rl.lr'"),  # a typo still gets the closest spelling
])
def test_trl_and_verl_names_hint_at_ours(section, override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override], section=section)
    assert f"(did you mean {expected}?)" in str(info.value)


@pytest.mark.parametrize("override", ["epsilon_high=0.28", "clip_ratio_low=0.1", "tau_pos=2", "delta=3",
                                      "vllm_importance_sampling_cap=3", "rollout_rs_threshold=2",
                                      "algorithm.eps_high=0.3"])
def test_a_typed_setting_hint_works_as_an_override(override):
    """A setting only some loss (correction) types have is hinted with such a type: pasted as the
    override, with a value, the config loads (the default type, ppo_clip, has no eps_high)."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [override], section="rl")
    hint = re.search(r"did you mean '([^']+)'", str(info.value)).group(1)
    key, _, value = hint.partition("=")
    assert value.startswith("{type: "), hint
    config = load_config(None, [f"{key}={value.split(' (or')[0].replace('...', override.split('=')[1])}"])
    assert getattr(config.algorithm, key.split(".")[1]).type in value


def test_a_setting_the_chosen_type_lacks_names_a_type_that_has_it():
    with pytest.raises(ConfigError, match=r"'ppo_clip' loss has no setting 'eps_high'.*"
                                          r"algorithm\.policy_loss=\{type: dapo, eps_high: \.\.\.\}"):
        load_config(None, ["algorithm.policy_loss.eps_high=0.3"])


@pytest.mark.parametrize("overrides, keys", [
    (["rl.group_size=1"], ("rl.mini_batch_size", "rl.group_size")),
    (["cluster.colocate=true", "cluster.learner_workers=2"], ("colocate",)),
    (["rollout.temperature=0"], ("rollout.temperature", "rl.group_size")),
])
def test_a_cross_field_error_is_the_message_not_the_config(overrides, keys):
    """A check across keys prints its message (naming the keys), not the section's whole dict."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert all(key in message for key in keys) and "{" not in message and len(message) < 300, message


@pytest.mark.parametrize("override", ["rl.steps=[1, 2", "data.system_prompt=a: b: c", "reward.terms=[{name: x",
                                      "rl.lr='2e-6"])
def test_an_override_that_is_not_yaml_is_one_line_naming_it(override):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert message.startswith(f"override {override!r}: the value is not valid YAML (line 1") and "\n" not in message


def test_a_config_file_that_is_not_yaml_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rl:\n  steps: 3\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not valid YAML: line ") and "\n" not in str(info.value)


def test_commented_yaml_round_trips_and_comments_every_key():
    import yaml

    from pipeline.config import commented_yaml

    config = load_config(CONFIGS[0].parent / "demo.yaml", ["algorithm.preset=dapo", "rl.lr=3e-6"])
    text = commented_yaml(config)
    assert Config.model_validate(yaml.safe_load(text)) == config
    lines = text.splitlines()
    keys = [i for i, line in enumerate(lines) if not line.lstrip().startswith("#")]
    # every key once, the chosen loss's settings (dapo: type, eps_low, eps_high, dual_clip_c) included
    assert len(keys) == len(list(_set_keys(config)))
    assert all(lines[i - 1].lstrip().startswith("# ") for i in keys)
    loss = lines.index("  policy_loss:")
    assert lines[loss + 2:loss + 10:2] == ["    type: dapo", "    eps_low: 0.2", "    eps_high: 0.28",
                                         "    dual_clip_c: null"]
    assert lines[loss + 5] == f"    # {DAPOSettings.model_fields['eps_high'].description}"
    assert "  lr: 3.0e-06" in lines  # the preset applied, the override kept
    only = commented_yaml(config, ["seed", "rl"])
    assert set(yaml.safe_load(only)) == {"seed", "rl"}


@pytest.mark.parametrize("overrides, keys", [
    (["rollout.max_tokens=2048"], ("rollout.max_tokens=2048", "rollout.max_model_len=1024")),
    (["rollout.max_tokens=700"], ("data.max_prompt_tokens=384", "rollout.max_tokens=700", "rollout.max_model_len=1024")),
    (["data.max_prompt_tokens=900"], ("data.max_prompt_tokens=900", "rollout.max_model_len=1024")),
    (["rollout.max_model_len=512"], ("rollout.max_tokens=256", "rollout.max_model_len=512")),
    (["eval.max_tokens=1000"], ("eval.max_tokens=1000", "rollout.max_model_len=1024")),
    (["lora.rank=32", "rollout.sync=adapter"], ("lora.rank=32", "rollout.max_lora_rank=16")),
])
def test_lengths_and_lora_rank_must_fit_the_engine(overrides, keys):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert all(key in str(info.value) for key in keys), str(info.value)


@pytest.mark.parametrize("overrides", [
    ["rollout.max_tokens=640"], ["rollout.max_model_len=2048", "rollout.max_tokens=1664"],
    ["lora.rank=32", "rollout.sync=merged"], ["lora.rank=32", "rollout.sync=adapter", "rollout.max_lora_rank=32"],
    ["lora.rank=32", "rollout.sync=adapter", "lora.enabled=false"],
])
def test_lengths_and_lora_rank_that_fit_load(overrides):
    load_config(None, overrides)


@pytest.mark.parametrize("section,override,expected", [
    ("rl", "actor_rollout_ref.rollout.n=4", "unknown key 'actor_rollout_ref.rollout.n' (did you mean 'rl.group_size'?)"),
    ("rl", "actor_rollout_ref.actor.optim.lr=1e-6", "unknown key 'actor_rollout_ref.actor.optim.lr' (did you mean 'rl.lr'?)"),
    ("rl", "actor_rollout_ref.rollout.temperature=0.7",
     "unknown key 'actor_rollout_ref.rollout.temperature' (did you mean 'rollout.temperature'?)"),
    ("rl", "trainer.total_training_steps=5", "unknown key 'trainer.total_training_steps' (did you mean 'rl.steps'?)"),
    ("rl", "rollotu.engine=hf", "unknown key 'rollotu' (did you mean 'rollout'?)"),  # a misspelt section
])
def test_a_nested_unknown_key_is_hinted_by_its_full_path(section, override, expected):
    """verl's nested keys (`actor_rollout_ref.rollout.n`) are hinted by their dotted paths, not by the
    spelling of their first component (which suggested `cluster.rollout_workers`)."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [override], section=section)
    assert expected in str(info.value)


def test_an_error_names_where_the_key_was_set(tmp_path):
    """A key set on the command line is blamed on the override, one set in the recipe on the file."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("rl:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(recipe, ["rl.lr=1e-6"])
    assert str(info.value).startswith(f"{recipe}: unknown key 'rl.stepz'")
    recipe.write_text("rl:\n  steps: 3\n")
    for override, expected in [("rl.stpes=3", "override rl.stpes=3: unknown key 'rl.stpes'"),
                               ("rl.lr=abc", "override rl.lr=abc: rl.lr: "),
                               ("actor_rollout_ref.rollout.n=4", "override actor_rollout_ref.rollout.n=4: unknown key")]:
        with pytest.raises(ConfigError) as info:
            load_config(recipe, [override])
        assert str(info.value).startswith(expected) and str(recipe) not in str(info.value)


@pytest.mark.parametrize("override,expected", [
    ("algorithm.preset=grpoo", "'grpo'"), ("algorithm.advantage=rlo", "'rloo'"),
    ("algorithm.policy_loss=dapoo", "'dapo'"), ("algorithm.correction=token_truncat", "'token_truncate'"),
    ("algorithm.loss_agg=token_mean", "'token-mean'"), ("rollout.engine=vlm", "'vllm'"), ("data.preset=gsm8", "'gsm8k'"),
])
def test_a_misspelt_choice_gets_the_closest_valid_one(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).endswith(f"(did you mean {expected}?)")


def test_a_choice_far_from_every_valid_one_gets_no_guess():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["algorithm.preset=xyzzy"])
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("override, key", [
    ("reward.terms=[{name:acuracy,weight:1}]", "'name:acuracy'"), ("lora={rank:8}", "'rank:8'"),
    ("algorithm.policy_loss={type:dapo}", "'type:dapo'"),
])
def test_a_flow_style_key_without_a_space_after_the_colon_is_explained(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(f"override {override!r}: {key} reads as one key")
    assert "write `name: value` with a space after the colon (YAML flow style)" in str(info.value)


def test_a_flow_style_key_without_a_space_in_a_recipe_is_explained(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("reward:\n  terms: [{name:accuracy}]\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(recipe))}: 'name:accuracy' reads as one key"):
        load_config(recipe)
    recipe.write_text("reward:\n  terms: [{name: accuracy}]\n")  # with the space: loads
    assert load_config(recipe).reward.terms[0].name == "accuracy"


def _number_keys() -> list[str]:
    """Every `section.key` whose type is a number (int or float, not bool), from the schema."""
    from pipeline.config.base import Section, _names

    keys = []
    for section, field in Config.model_fields.items():
        kind = field.annotation
        if not (isinstance(kind, type) and issubclass(kind, Section)):
            continue
        keys += [f"{section}.{name}" for name, sub in kind.model_fields.items()
                 if not _names(sub.annotation, bool) and (_names(sub.annotation, int) or _names(sub.annotation, float))]
    return keys


@pytest.mark.parametrize("value", ["true", "false", "yes"])
def test_a_boolean_for_a_number_key_is_an_error_naming_it(value):
    keys = _number_keys()
    assert {"rl.max_staleness", "rl.steps", "rl.lr", "rollout.temperature", "lora.rank"} <= set(keys)
    for key in keys:
        with pytest.raises(ConfigError, match=re.escape(f"{key}: expects a number, not a boolean")):
            load_config(None, [f"{key}={value}"])
