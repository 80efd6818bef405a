"""Typed configuration: one schema for every stage, loaded from YAML, overridable from the CLI.

    cfg = load_config("configs/grpo.yaml", ["rl.lr=2e-6", "algorithm.preset=dapo"])

Unknown keys and bad values raise `ConfigError` naming the key (and the closest valid key).
The `algorithm` section starts from a named preset (pipeline/algorithms/presets.py); any key the user
sets overrides the preset's value for that key only.

Modules, in import order: base (errors, `Section`) -> sections (shared sections), algorithm,
stages (per-stage sections) -> schema (`Config`, cross-section checks) -> hints (error messages)
-> loading (YAML in and out).
"""

from pipeline.config.algorithm import GROUP_ADVANTAGES, TYPED_KEYS, AdvantageName, AggName, AlgorithmConfig
from pipeline.config.base import ConfigError, DataError, Section
from pipeline.config.loading import commented_yaml, load_config, parse_overrides, save_config, yaml_value
from pipeline.config.schema import Config
from pipeline.config.sections import (DEFAULT_SYSTEM_PROMPT, ClusterConfig, DataConfig, LoraConfig, ModelConfig,
                                      RewardConfig, RewardTerm, RolloutConfig)
from pipeline.config.stages import DPOConfig, EvalConfig, OptimConfig, RewardModelConfig, RLConfig, SFTConfig

__all__ = [
    "AdvantageName", "AggName", "AlgorithmConfig", "ClusterConfig", "Config", "ConfigError", "DataConfig",
    "DataError", "DEFAULT_SYSTEM_PROMPT", "DPOConfig", "EvalConfig", "GROUP_ADVANTAGES", "LoraConfig",
    "ModelConfig", "OptimConfig", "RewardConfig", "RewardModelConfig", "RewardTerm", "RLConfig",
    "RolloutConfig", "Section", "SFTConfig", "TYPED_KEYS", "commented_yaml", "load_config",
    "parse_overrides", "save_config", "yaml_value",
]
