"""Format reward and soft overlong punishment (docs/algorithms.md §7); overlong filtering is
tested with the batch that applies it (test_batch.py)."""

import pytest

import rewards
from rewards.format import format_score
from rewards.length import soft_overlong_penalty


@pytest.mark.parametrize("text, strict, partial", [
    ("We add 2 and 3 to get \\boxed{5}.", 1.0, 1.0),
    ("Reasoning first.\n\n**Answer:** $\\boxed{\\frac{1}{2}}$", 1.0, 1.0),
    ("\\boxed{5}", 0.0, 0.5),                                      # no reasoning before it
    ("Maybe \\boxed{4}, no: \\boxed{5}", 0.0, 0.5),                # two answers
    ("Answer \\boxed{5} " + "then rambling " * 30, 0.0, 0.5),      # not near the end
    ("Reasoning but never an answer.", 0.0, 0.0),
    ("Reasoning \\boxed{5", 0.0, 0.0),                             # unclosed box
    ("Reasoning \\boxed{}", 0.0, 0.0),                             # empty box
    ("", 0.0, 0.0),
])
def test_default_structure(text, strict, partial):
    assert format_score(text) == strict
    assert format_score(text, partial=True) == partial


@pytest.mark.parametrize("text, strict, partial", [
    ("<think>Add the numbers.</think>The answer is \\boxed{5}.", 1.0, 1.0),
    ("<think>Try \\boxed{4}? No.</think>\\boxed{5}", 1.0, 1.0),     # boxes inside thinking are fine
    ("Add the numbers. \\boxed{5}", 0.0, 0.5),                     # no think tags
    ("<think></think>\\boxed{5}", 0.0, 0.5),                       # empty thinking
    ("<think>a</think><think>b</think>\\boxed{5}", 0.0, 0.5),      # two think blocks
    ("<think>Add the numbers.</think>I am not sure.", 0.0, 0.25),  # well-formed, no answer
    ("<think>never closed \\boxed{5}", 0.0, 0.5),
])
def test_think_tags(text, strict, partial):
    assert format_score(text, think_tags=True) == strict
    assert format_score(text, think_tags=True, partial=True) == partial


def test_think_in_prompt_and_answer_tag():
    assert format_score("Reasoning.</think>\\boxed{1}", think_tags=True, think_in_prompt=True) == 1.0
    assert format_score("<think>x</think>\\boxed{1}", think_tags=True, think_in_prompt=True) == 0.0
    tagged = "<think>Work.</think><answer>7</answer>"
    assert format_score(tagged, think_tags=True, answer="answer_tag") == 1.0
    assert format_score("<think>Work.</think><answer> </answer>", think_tags=True, answer="answer_tag") == 0.0


@pytest.mark.parametrize("text, strict, partial", [
    ("<think>\n t \n</think>\n<answer>\n 333 \n</answer>\n</answer>", 0.0, 0.5),  # issue: stray closing tag
    ("<think>\n t \n</think>\n<answer>\n 333 \n</answer>", 1.0, 1.0),
    ("<think>t</think><answer>1</answer><answer>2</answer>", 0.0, 0.5),            # two answers
    ("<think>t</think></answer><answer>2</answer>", 0.0, 0.5),                      # close before open
    ("<think>t</think><answer><answer>2</answer>", 0.0, 0.5),                       # opened twice
    ("<think>t <answer>1</answer></think><answer>2</answer>", 0.0, 0.5),            # tags inside the reasoning
    ("<think>t</think></think><answer>2</answer>", 0.0, 0.5),                       # think closed twice
    ("<think>t</think><think><answer>2</answer>", 0.0, 0.5),                        # think opened twice
    ("</think><think>t</think><answer>2</answer>", 0.0, 0.5),                       # out of order
    ("<think>t</think><answer>2", 0.0, 0.25),                                       # never closed: no answer
    ("<think>t</think><answer>\\boxed{2}</answer>", 1.0, 1.0),
])
def test_every_tag_once_in_order(text, strict, partial):
    assert format_score(text, think_tags=True, answer="answer_tag") == strict
    assert format_score(text, think_tags=True, answer="answer_tag", partial=True) == partial


@pytest.mark.parametrize("text, plain, think", [
    ("The values are $x=\\boxed{2}$ and $y=\\boxed{3}$.", 1.0, 1.0),           # one answer in two boxes
    ("So $\\boxed{2}$, $\\boxed{3}$", 1.0, 1.0),
    ("We get \\boxed{2}. Rechecking the sum, it is \\boxed{3}.", 0.0, 0.0),    # two answers
    ("\\boxed{1}\\boxed{2}", 0.0, 1.0),                                       # one answer; reasoning only in think
])
def test_adjacent_boxes_count_as_one(text, plain, think):
    assert format_score(text) == plain
    assert format_score(f"<think>Work.</think>{text}", think_tags=True) == think


def test_format_reward_registry_callable():
    reward = rewards.get("format", partial=True)
    assert reward(["Because \\boxed{1}", "\\boxed{1}\\boxed{2}", "nothing"], answer=["1"] * 3) == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="answer style"):
        rewards.get("format", answer="xml")


@pytest.mark.parametrize("length, expected", [
    (0, 0.0), (12, 0.0),           # |o| <= L_max - L_cache
    (13, -0.25), (14, -0.5), (15, -0.75),
    (16, -1.0),                    # exactly L_max
    (17, -1.0), (1000, -1.0),      # past L_max
])
def test_soft_overlong_boundaries(length, expected):
    # L_max = 16, L_cache = 4: threshold 12, linear from 0 to -1 over (12, 16]
    assert soft_overlong_penalty(length, max_tokens=16, cache=4) == pytest.approx(expected)


def test_soft_overlong_reward_and_defaults():
    reward = rewards.get("soft_overlong", max_tokens=20480)  # DAPO: L_cache = 4096 by default
    assert reward(["a", "b", "c"], lengths=[16384, 18432, 20481]) == pytest.approx([0.0, -0.5, -1.0])
    with pytest.raises(ValueError, match="max_tokens"):
        rewards.get("soft_overlong")
    with pytest.raises(ValueError, match="cache"):
        rewards.get("soft_overlong", max_tokens=10, cache=11)
    with pytest.raises(ValueError, match="lengths"):
        reward(["a"])
