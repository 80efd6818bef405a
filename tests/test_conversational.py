"""Conversational (TRL) data and already rendered prompts: loading, rendering, and rewards through RL."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

import rewards
from pipeline.config import DEFAULT_SYSTEM_PROMPT, load_config
from pipeline.data.problems import DataError, Problem, load_problems
from pipeline.core.tokens import prompt_ids, prompt_text, render_prompt
from pipeline.data.prompts import encode_prompts
from rewards.registry import _FACTORIES
from canned_engine import CannedEngine

ADD = [{"role": "user", "content": "Add 3 and 4."}]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path):
    from pipeline.core.models import load_tokenizer

    return load_tokenizer(default_model_dir)


# ---- loading -------------------------------------------------------------------------------------


def test_a_message_list_column_loads_as_messages(tmp_path: Path) -> None:
    system = {"role": "system", "content": "Answer in \\boxed{}."}
    rows = [{"prompt": ADD, "solution": "7", "id": 1}, {"prompt": [system, *ADD], "solution": "7", "id": 2}]
    problems = load_problems(str(_jsonl(tmp_path / "conv.jsonl", rows)), columns={"problem": "prompt", "answer": "solution"})
    assert problems[0].messages == ADD and problems[0].problem == "Add 3 and 4."
    assert problems[1].messages == [system, *ADD]
    assert problems[0].extra == {"id": 1} and problems[0].answer == "7"
    assert problems[0].to_row()["problem"] == ADD  # exported rows keep the conversation


@pytest.mark.parametrize("prompt, message", [
    ([], "empty message list"),
    (["Add 3 and 4."], "item 0 is not a message"),
    ([{"role": "user", "content": ["parts"]}], "item 0 is not a message"),
    ([{"role": "usr", "content": "Add"}], "role 'usr'"),
    ([*ADD, {"role": "assistant", "content": "7"}], "ends with a 'assistant' message"),
])
def test_a_bad_message_list_is_named_with_its_line(tmp_path: Path, prompt, message) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": ADD, "answer": "7"}, {"prompt": prompt, "answer": "7"}])
    with pytest.raises(DataError, match=rf"bad.jsonl, line 2: field 'problem' \(column 'prompt'\).*{re.escape(message)}"):
        load_problems(str(path), columns={"problem": "prompt"})


# ---- rendering -----------------------------------------------------------------------------------


def test_messages_render_with_the_template_and_a_sensible_system_prompt(tokenizer) -> None:
    text = render_prompt(tokenizer, ADD, DEFAULT_SYSTEM_PROMPT)
    assert text == render_prompt(tokenizer, "Add 3 and 4.", DEFAULT_SYSTEM_PROMPT)  # config's system prompt added
    own = [{"role": "system", "content": "Be terse."}, *ADD]
    text = render_prompt(tokenizer, own, DEFAULT_SYSTEM_PROMPT)
    assert "Be terse." in text and DEFAULT_SYSTEM_PROMPT not in text  # the data's own system prompt wins
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    conversational = Problem("Add 3 and 4.", "7", messages=own)
    assert prompt_ids(tokenizer, conversational, DEFAULT_SYSTEM_PROMPT) == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "[{" not in prompt_text(tokenizer, conversational, "")


@pytest.mark.parametrize("rendered", [
    "<|im_start|>user\nAdd 3 and 4.<|im_end|>\n",
    "<|im_start|>user\nAdd 3 and 4.<|im_end|>",
    "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nAdd 3 and 4.<|im_end|>\n  ",
])
def test_a_rendered_prompt_without_the_assistant_header_gets_the_generation_prompt(tokenizer, rendered) -> None:
    for prompt in (rendered, Problem(rendered, "7")):  # given directly or as a data file's problem text
        text = prompt_text(tokenizer, prompt, DEFAULT_SYSTEM_PROMPT)
        assert text == rendered.rstrip() + "\n<|im_start|>assistant\n"
        assert text.count("<|im_start|>user") == 1 and DEFAULT_SYSTEM_PROMPT not in text


def test_rendered_prompts_that_end_a_turn_or_continue_the_assistant_are_kept(tokenizer) -> None:
    full = "<|im_start|>user\nAdd 3 and 4.<|im_end|>\n<|im_start|>assistant\n"
    assert prompt_text(tokenizer, full, DEFAULT_SYSTEM_PROMPT) == full
    prefilled = full + "<think>"
    assert prompt_text(tokenizer, prefilled, DEFAULT_SYSTEM_PROMPT) == prefilled
    with pytest.raises(DataError, match=r"stops inside a turn; end the turn with '<\|im_end\|>'"):
        encode_prompts(tokenizer, ["<|im_start|>user\nAdd 3 and 4."], DEFAULT_SYSTEM_PROMPT, 384)


# ---- rewards written for TRL and open-r1, unchanged, through the RL stage --------------------------


def trl_format_reward(completions, **kwargs):
    """TRL docs' conversational format reward."""
    pattern = r"^<think>.*?</think>\s*<answer>.*?</answer>$"
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.match(pattern, content, re.S) else 0.0 for content in contents]


def open_r1_accuracy_reward(completions, solution, **kwargs):
    """open-r1's accuracy reward (math-verify), None where the gold does not parse."""
    from math_verify import LatexExtractionConfig, parse, verify

    contents = [completion[0]["content"] for completion in completions]
    scores = []
    for content, sol in zip(contents, solution):
        gold = parse(sol, extraction_mode="first_match")
        if len(gold) != 0:
            answer = parse(content, extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                           extraction_mode="first_match")
            scores.append(float(verify(gold, answer)))
        else:
            scores.append(None)
    return scores


TEXTS = ["<think>\n3 + 4 = 7\n</think>\n<answer>\\boxed{7}</answer>", "I think it is \\boxed{8}",
         "<think>\nhm\n</think>\n<answer>\\boxed{7}</answer>", "no idea"]




@pytest.fixture
def recorded():
    """The TRL/open-r1 functions registered as plain functions, and one recording every call's arguments."""
    calls: list[dict] = []

    def record(completions, **kwargs):
        calls.append({"completions": completions, **kwargs})
        return [0.0] * len(completions)

    def picky(prompts, completions, answer):
        calls.append({"picky": (prompts, completions, answer)})
        return [0.0] * len(completions)

    for name, fn in [("trl_format", trl_format_reward), ("open_r1_accuracy", open_r1_accuracy_reward),
                     ("record_call", record), ("picky_call", picky)]:
        rewards.register(name, fn)
    yield calls
    for name in ("trl_format", "open_r1_accuracy", "record_call", "picky_call"):
        del _FACTORIES[name]


def _config(tiny_model_dir, data, tmp_path, *overrides):
    return load_config(None, [
        f"model.name={tiny_model_dir}", f"output_dir={tmp_path}", f"data.train={data}", f"data.test={data}",
        "rl.steps=1", "rl.prompts_per_step=2", "rl.group_size=4", "rl.mini_batch_size=8", "rl.micro_batch_size=4",
        "rl.eval_every=0", "rollout.max_tokens=12", "reward.workers=1", "rl.bf16_autocast=false", *overrides])


@pytest.mark.slow
def test_trl_and_open_r1_rewards_run_unchanged_on_conversational_data(tiny_model_dir, tmp_path, recorded):
    from pipeline.rl.trainer import Trainer
    from pipeline.core.tracking import read_metrics

    rows = [{"prompt": ADD, "solution": "$7$", "difficulty": "easy"},
            {"prompt": [{"role": "user", "content": "Add 5 and 2."}], "solution": "$7$", "difficulty": "easy"}]
    data = _jsonl(tmp_path / "conv.jsonl", rows)
    config = _config(tiny_model_dir, data, tmp_path, "data.columns={problem: prompt, answer: solution}",
                     "rl.steps=2",  # records 0 and 1: two updates (no final rollout without an evaluation)
                     "reward.terms=[{name: trl_format}, {name: open_r1_accuracy}, {name: record_call}, "
                     "{name: picky_call}, {name: format, weight: 0.1, params: {answer: answer_tag, think_tags: true}}]")
    trainer = Trainer(config, engine=CannedEngine(lambda j: TEXTS[j % len(TEXTS)]))
    trainer.run()
    trainer.close()
    call = next(c for c in recorded if "completions" in c)
    assert call["completions"][0] == [{"role": "assistant", "content": TEXTS[0]}]
    assert call["prompts"][0] in (ADD, rows[1]["prompt"]) and call["prompt"] == call["prompts"]
    assert call["solution"][0] == "$7$" and call["answer"][0] == "$7$" and call["difficulty"] == ["easy"] * 8
    assert call["problem"][0] in ("Add 3 and 4.", "Add 5 and 2.")
    assert call["completion_ids"][1] == [101, 2] and call["lengths"][1] == 2 and call["truncated"][1] is False
    assert call["trainer_state"].global_step == 0 and call["step"] == 0
    picky = next(c["picky"] for c in recorded if "picky" in c)
    assert picky[1][0][0]["content"] == TEXTS[0] and picky[2][0] == "$7$"
    (first, last) = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert first["reward/trl_format/mean"] == pytest.approx(0.5)
    assert first["reward/open_r1_accuracy/mean"] == pytest.approx(0.5)
    assert first["reward/format/mean"] == pytest.approx(0.5)  # the built-in reads the messages' text
    assert first["reward/open_r1_accuracy/none_frac"] == 0.0
    assert math.isfinite(first["train/loss"])
    assert last["step"] == 1 and [c["step"] for c in recorded if "completions" in c][-1] == 1


@pytest.mark.slow
def test_gsm8k_rows_give_the_normalised_answer_and_rendered_prompts(tiny_model_dir, tmp_path, recorded):
    from pipeline.rl.trainer import Trainer

    rows = [{"question": f"Tom has {i} apples and buys {72 - i}. How many?", "answer": f"{i}+{72 - i}=72\n#### 72"}
            for i in range(2)]
    config = _config(tiny_model_dir, _jsonl(tmp_path / "gsm8k.jsonl", rows), tmp_path,
                     "reward.terms=[{name: record_call}, {name: accuracy}]")
    trainer = Trainer(config, engine=CannedEngine(lambda j: TEXTS[j % len(TEXTS)]))
    groups, _ = trainer.rollout()
    trainer.close()
    call = recorded[0]
    assert call["answer"] == ["72"] * 8
    assert call["completions"][0] == TEXTS[0]
    assert call["prompts"][0].endswith("<|im_start|>assistant\n") and "Tom has" in call["prompts"][0]
    assert "#### 72" in call["solution"][0] or "\\boxed{72}" in call["solution"][0]
    assert [g.components["accuracy"] for g in groups] == [[0.0] * 4] * 2  # \boxed{7} / \boxed{8} vs 72
