"""Reward registry and weighted scorer (docs/algorithms.md §7)."""

import re
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
                                 "soft_overlong": [-0.5, 0.0], "toy_length_2": [16.0, 2.0]}
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


# ---- TRL's calling convention (docs/rewards.md, "The calling convention") -----------------------


def _message(text):
    return [{"role": "assistant", "content": text}]


@pytest.fixture
def registered():
    """Register plain reward functions for one test, removed afterwards."""
    names = []

    def add(name, fn):
        rewards.register(name, fn)
        names.append(name)
        return name

    yield add
    for name in names:
        del _FACTORIES[name]


def test_plain_trl_function_registers_and_gets_only_its_arguments(registered):
    calls = []

    def picky(prompts, completions, answer):  # no **kwargs: receives exactly what it names
        calls.append((prompts, completions, answer))
        return [float(c == a) for c, a in zip(completions, answer)]

    def trl_len(completions, **kwargs):  # TRL docs' example
        calls.append(sorted(kwargs))
        return [-abs(3 - len(c)) for c in completions]

    terms = [Term(registered("picky", picky)), Term(registered("trl_len", trl_len), 0.5)]
    with rewards.RewardScorer(terms) as scorer:
        result = scorer(["7", "12345"], prompt=["p1", "p2"], answer=["7", "8"], lengths=[1, 5], tests=[None, None])
    assert calls[0] == (["p1", "p2"], ["7", "12345"], ["7", "8"])  # `prompt` is an alias of `prompts`
    assert calls[1] == ["answer", "lengths", "prompt", "prompts", "tests"]
    assert result.total == [1.0 - 1.0, 0.0 - 1.0]


def test_plain_function_params_bind_and_are_checked(registered):
    def longer_than(completions, limit=2, **kwargs):
        return [float(len(c) > limit) for c in completions]

    name = registered("longer_than", longer_than)
    assert rewards.get(name, limit=4)(completions=["abc", "abcde"]) == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"'limt' \(did you mean 'limit'\?\)"):
        rewards.get(name, limt=4)


def test_a_missing_column_is_named(registered):
    name = registered("needs_tests", lambda completions, tests: [1.0] * len(completions))
    with rewards.RewardScorer([Term(name)]) as scorer, pytest.raises(ValueError, match=r"'needs_tests'.*'tests'"):
        scorer(["a"], answer=["1"])


def test_builtins_read_the_text_of_message_lists():
    fmt = rewards.get("format", think_tags=True)
    assert fmt(completions=[_message("<think>\nAdd 3 and 4.\n</think>\nSo \\boxed{7}.")]) == [1.0]
    assert fmt(completions=[_message("So \\boxed{7}.")]) == [0.0]
    accuracy = rewards.get("accuracy", workers=1)
    try:
        assert accuracy(completions=[_message("So \\boxed{\\{1,2\\}}."), _message("\\boxed{3}")],
                        answer=["\\{1,2\\}", "4"]) == [1.0, 0.0]
    finally:
        accuracy.close()
    assert rewards.message_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}]) == "hi"
    assert rewards.message_text("plain") == "plain" and rewards.message_text(None) == ""


def test_code_reward_reads_message_lists():
    code = rewards.get("code", workers=1, timeout=5.0)
    program = "```python\nprint(int(input()) * 2)\n```"
    assert code(completions=[_message(program)], tests=[[{"input": "21", "output": "42"}]]) == [1.0]


def test_none_is_not_applicable_and_nan_totals_name_term_and_sample(registered):
    def sometimes(completions, **kwargs):
        return [None, 1.0, None, float("nan")]

    def never(completions, **kwargs):
        return [None, 2.0, None, 0.0]

    terms = [Term(registered("sometimes", sometimes)), Term(registered("never", never), 0.5)]
    with rewards.RewardScorer(terms) as scorer:
        result = scorer(["a", "b", "c", "d"])
    assert result.components["sometimes"][:3] == [None, 1.0, None]
    assert result.total[1] == 2.0
    assert all(t != t for t in (result.total[0], result.total[2], result.total[3]))  # NaN
    assert result.non_finite() == [("sometimes", 3), ("*", 0), ("*", 2)]
    assert "'sometimes' returned nan" in result.describe("sometimes", 3)
    assert "every reward term (sometimes, never) returned None" in result.describe("*", 0)
    stats = rewards.component_stats(result.components)
    assert stats["reward/sometimes/none_frac"] == 0.5 and stats["reward/never/none_frac"] == 0.5
    assert stats["reward/never/mean"] == 1.0


def test_a_reward_returning_non_numbers_is_named(registered):
    name = registered("wordy", lambda completions, **kw: ["yes"] * len(completions))
    with rewards.RewardScorer([Term(name)]) as scorer, pytest.raises(TypeError, match=r"'wordy'.*'yes'.*sample 0"):
        scorer(["a"])


# ---- rewards named in config: check_terms and user code -------------------------------------------


@pytest.mark.parametrize("term, message", [
    ({"name": "acuracy"}, r"reward.terms\[0\]: unknown reward 'acuracy' \(did you mean 'accuracy'\?\)"),
    ({"name": "format", "params": {"think_tag": True}}, r"'think_tag' \(did you mean 'think_tags'\?\).*'format'"),
    ({"name": "reward_model"}, r"'reward_model' needs parameter 'path'"),
    ({"name": "format", "weight": float("nan")}, r"weight must be a finite number"),
    ({"name": "no_such_module_xyz:fn"}, r"cannot import module 'no_such_module_xyz'"),
    ({"name": "missing/file.py:fn"}, r"file 'missing/file.py' not found"),
])
def test_check_terms_names_the_bad_term(term, message):
    with pytest.raises(ValueError, match=message):
        rewards.check_terms([term])


def test_check_terms_accepts_the_default_terms():
    config = pytest.importorskip("pipeline.config")
    rewards.check_terms(config.RewardConfig().terms)
    rewards.check_terms([{"name": "soft_overlong"}])  # max_tokens comes from the scorer's shared settings


USER_REWARDS = '''
def len_penalty(completions, max_chars=5, **kwargs):
    """TRL-style plain function with a parameter."""
    return [-1.0 if len(c) > max_chars else 0.0 for c in completions]


def make_bonus(bonus=1.0):
    """A factory."""
    def reward(completions, answer, **kwargs):
        return [bonus if a in c else 0.0 for c, a in zip(completions, answer)]
    return reward


NOT_CALLABLE = 3
'''


def test_rewards_from_a_file_and_a_module(tmp_path, monkeypatch):
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    package = tmp_path / "my_pkg_rlvr_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rewards.py").write_text(USER_REWARDS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    terms = [{"name": "user_rewards.py:len_penalty", "params": {"max_chars": 3}},
             {"name": f"{tmp_path}/user_rewards.py:make_bonus", "weight": 2.0, "params": {"bonus": 0.5}},
             {"name": "my_pkg_rlvr_test.rewards:len_penalty"}]
    rewards.check_terms(terms)
    with rewards.RewardScorer(terms) as scorer:
        result = scorer(["x = 42", "42"], answer=["42", "7"])
    # metric tags: the function's name, deduplicated; no path or ':' in a TensorBoard tag
    assert result.components == {"len_penalty": [-1.0, 0.0], "make_bonus": [0.5, 0.0],
                                 "len_penalty_2": [-1.0, 0.0]}
    assert all(re.fullmatch(r"[-/\w.]+", tag) for tag in rewards.component_stats(result.components))
    with pytest.raises(ValueError, match=r"no 'len_penalt' \(did you mean 'len_penalty'\?\)"):
        rewards.check_terms([{"name": "user_rewards.py:len_penalt"}])
    with pytest.raises(ValueError, match=r"'NOT_CALLABLE' is a int, not a function"):
        rewards.check_terms([{"name": "user_rewards.py:NOT_CALLABLE"}])
    with pytest.raises(ValueError, match=r"'max_char' \(did you mean 'max_chars'\?\)"):
        rewards.check_terms([{"name": "user_rewards.py:len_penalty", "params": {"max_char": 1}}])
    (tmp_path / "broken.py").write_text("import nothing_here_rlvr\n")
    with pytest.raises(ValueError, match=r"cannot import file 'broken.py' \(ModuleNotFoundError"):
        rewards.check_terms([{"name": "broken.py:fn"}])


def test_bad_reward_term_fails_before_any_model_loads(monkeypatch):
    import pipeline.core.models
    import stages.rl

    monkeypatch.setattr(pipeline.core.models, "load_policy", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(pipeline.core.models, "load_tokenizer", lambda *a, **k: pytest.fail("a tokenizer was loaded"))
    for override, message in [("reward.terms=[{name: acuracy}]", "did you mean 'accuracy'"),
                              ("reward.terms=[{name: format, params: {think_tag: true}}]", "think_tags")]:
        with pytest.raises(SystemExit) as exit_info:
            stages.rl.main([override])
        assert message in str(exit_info.value) and "reward.terms[0]" in str(exit_info.value)
