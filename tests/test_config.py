"""The typed config: YAML + overrides, presets, and errors that name the key."""

from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError, load_config, parse_overrides, save_config

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
    config = load_config(None, ["algorithm.preset=dapo", "algorithm.eps_high=0.3"])
    assert config.algorithm.policy_loss == "dapo"
    assert config.algorithm.loss_agg == "token-mean"
    assert config.algorithm.dynamic_sampling is True
    assert config.algorithm.eps_low == 0.2
    assert config.algorithm.eps_high == 0.3


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


def test_save_round_trip(tmp_path):
    config = load_config(None, ["algorithm.preset=gspo", "rl.steps=7"])
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


def test_every_field_has_a_docstring():
    from pipeline.config import RewardTerm

    keys = [*_fields(Config), *_fields(RewardTerm, "reward.terms[].")]
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
    ("rl", "epsilon_high=0.28", "'algorithm.eps_high'"),
    ("rl", "algorithm.clip_ratio_high=0.28", "'algorithm.eps_high'"),
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


def test_commented_yaml_round_trips_and_comments_every_key():
    import yaml

    from pipeline.config import commented_yaml

    config = load_config(CONFIGS[0].parent / "demo.yaml", ["algorithm.preset=dapo", "rl.lr=3e-6"])
    text = commented_yaml(config)
    assert Config.model_validate(yaml.safe_load(text)) == config
    lines = text.splitlines()
    keys = [i for i, line in enumerate(lines) if not line.lstrip().startswith("#")]
    assert len(keys) == sum(1 for _ in _fields(Config))
    assert all(lines[i - 1].lstrip().startswith("# ") for i in keys)
    assert "  eps_high: 0.28" in lines and "  lr: 3.0e-06" in lines  # the preset applied, the override kept
    only = commented_yaml(config, ["seed", "rl"])
    assert set(yaml.safe_load(only)) == {"seed", "rl"}
