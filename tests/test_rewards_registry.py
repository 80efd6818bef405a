"""Reward registry and weighted scorer (docs/algorithms.md §7)."""

from dataclasses import dataclass, field

import pytest

import rewards
from rewards.registry import _FACTORIES


@dataclass
class Term:  # stands in for the config's RewardTerm (name, weight, params)
    name: str
    weight: float = 1.0
    params: dict = field(default_factory=dict)


@pytest.fixture
def toy_reward():
    @rewards.register("toy_length")
    def toy_length(scale: float = 1.0):
        def reward(completions, **_):
            return [scale * len(c) for c in completions]
        return reward

    yield
    del _FACTORIES["toy_length"]


def test_builtins_registered():
    assert {"accuracy", "format", "soft_overlong", "code"} <= set(rewards.available())


def test_unknown_name_and_param_are_named():
    with pytest.raises(ValueError, match=r"'nope'.*accuracy.*code.*format.*soft_overlong"):
        rewards.get("nope")
    with pytest.raises(ValueError, match=r"'bogus'.*correct.*wrong"):
        rewards.get("accuracy", bogus=1)


def test_register_custom_and_duplicates(toy_reward):
    assert rewards.get("toy_length", scale=2.0)(["ab", ""], answer=["x", "y"], extra=[1, 2]) == [4.0, 0.0]
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("toy_length")(lambda: None)


def test_scorer_weights_and_components(toy_reward):
    terms = [Term("toy_length", 0.5, {"scale": 2.0}), {"name": "format", "weight": 2.0, "params": {}},
             Term("soft_overlong", -1.0, {"cache": 2}), Term("toy_length", 1.0)]
    with rewards.RewardScorer(terms, max_tokens=10) as scorer:
        result = scorer(["Think. \\boxed{1}", "no"], answer=["1", "2"], lengths=[9, 3],
                        truncated=[False, False], problem_id=[7, 8])
    assert result.components == {"toy_length": [32.0, 4.0], "format": [1.0, 0.0],
                                 "soft_overlong": [-0.5, 0.0], "toy_length#2": [16.0, 2.0]}
    assert result.total == pytest.approx([0.5 * 32 + 2 * 1 + 0.5 + 16, 0.5 * 4 + 2.0])


def test_scorer_rejects_bad_config_and_columns(toy_reward):
    with pytest.raises(ValueError, match="nope"):
        rewards.RewardScorer([Term("nope")])
    with pytest.raises(ValueError, match="'bogus'"):
        rewards.RewardScorer([Term("format", 1.0, {"bogus": 1})])
    with pytest.raises(ValueError, match="at least one"):
        rewards.RewardScorer([])
    with pytest.raises(ValueError, match="name, weight, params"):
        rewards.RewardScorer([{"weight": 1.0}])
    scorer = rewards.RewardScorer([Term("toy_length")])
    with pytest.raises(ValueError, match="'answer'"):
        scorer(["a", "b"], answer=["1"])


def test_scorer_shares_settings_with_terms_that_take_them():
    with rewards.RewardScorer([Term("accuracy", 1.0, {"wrong": -1.0}), Term("format", 0.5)],
                              workers=1, timeout=3.0) as scorer:
        result = scorer(["So \\boxed{0.5}", "So \\boxed{2}"], answer=["1/2", "3"])
    assert result.components["accuracy"] == [1.0, -1.0]
    assert result.total == [1.5, -0.5]


def test_scorer_accepts_the_config_reward_terms():
    config = pytest.importorskip("pipeline.config")
    terms = [config.RewardTerm(name="format", weight=0.5, params={"partial": True}),
             config.RewardTerm(name="soft_overlong", weight=2.0)]
    with rewards.RewardScorer(terms, max_tokens=100) as scorer:
        result = scorer(["Why: \\boxed{1}", "\\boxed{1}\\boxed{2}"], lengths=[50, 90])
    assert result.components == {"format": [1.0, 0.5], "soft_overlong": [0.0, -0.5]}
    assert result.total == pytest.approx([0.5, 0.25 - 1.0])
