"""Preference pairs: file loading with clear errors, pairing sampled answers, encoding."""

import json
import logging

import pytest

from pipeline.data.problems import DataError, Problem
from pipeline.data.preference import (PreferencePair, encode_pairs, load_pairs, pair_batch, pairs_from_samples,
                                 save_pairs, split_by_prompt)


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


GOOD = {"prompt": "What is 1+1?", "chosen": "1+1=2. \\boxed{2}", "rejected": "\\boxed{3}"}


def test_load_pairs_reads_rows_and_keeps_extra_columns(tmp_path):
    path = _write(tmp_path / "p.jsonl", [GOOD, {**GOOD, "answer": "2"}])
    pairs = load_pairs(path)
    assert [p.chosen for p in pairs] == [GOOD["chosen"]] * 2
    assert pairs[1].extra == {"answer": "2"} and pairs[0].origin == "file"


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "chosen": "a"}, "line 2: missing field 'rejected'"),
    ({"prompt": "q", "chosen": "  ", "rejected": "b"}, "line 2: field 'chosen' is empty"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "line 2: field 'prompt' is empty"),
    ({"prompt": "q", "chosen": "a", "rejected": 3}, "line 2: field 'rejected' must be a string"),
    ("{not json", "line 2: not valid JSON"),
    ("[1, 2]", "line 2: expected a JSON object"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, message):
    path = _write(tmp_path / "bad.jsonl", [GOOD, row])
    with pytest.raises(DataError) as err:
        load_pairs(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_identical_pairs_are_skipped_with_a_count_or_fail_when_all(tmp_path, caplog):
    same = {**GOOD, "rejected": GOOD["chosen"] + "  "}
    path = _write(tmp_path / "p.jsonl", [GOOD, same, same])
    with caplog.at_level(logging.WARNING):
        assert len(load_pairs(path)) == 1
    assert "skipped 2 pair(s)" in caplog.text and "lines 2, 3" in caplog.text
    with pytest.raises(DataError, match="every pair has identical"):
        load_pairs(_write(tmp_path / "q.jsonl", [same]))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no rows"):
        load_pairs(_write(tmp_path / "e.jsonl", []))


def test_save_then_load_round_trips(tmp_path):
    pairs = [PreferencePair("q", "good", "bad", "sampled", {"answer": "1"})]
    save_pairs(tmp_path / "p.jsonl", pairs)
    assert load_pairs(tmp_path / "p.jsonl") == pairs


def _problems(n):
    return [Problem(f"q{i}", str(i), f"work {i} \\boxed{{{i}}}") for i in range(n)]


def test_pairs_from_samples_pairs_correct_with_wrong_of_the_same_problem():
    problems = _problems(3)
    texts = [["r0a", "w0a", "w0b", "r0b"], ["w1a", "w1b", "w1a", "w1c"], ["r2", "r2", "r2", "r2"]]
    correct = [[True, False, False, True], [False] * 4, [True] * 4]
    pairs = pairs_from_samples(problems, texts, correct, seed=0, min_pairs=0, pairs_per_problem=4)
    assert all(p.origin == "sampled" and p.prompt == "q0" for p in pairs)
    assert {(p.chosen, p.rejected) for p in pairs} == {(r, w) for r in ("r0a", "r0b") for w in ("w0a", "w0b")}
    # under a cap of 2 each correct and each wrong sample appears exactly once
    capped = pairs_from_samples(problems, texts, correct, seed=0, min_pairs=0, pairs_per_problem=2)
    assert sorted(p.chosen for p in capped) == ["r0a", "r0b"] and sorted(p.rejected for p in capped) == ["w0a", "w0b"]


def test_pairs_from_samples_covers_every_combination_once():
    problems = _problems(1)
    right, wrong = [f"r{i}" for i in range(4)], [f"w{j}" for j in range(6)]
    pairs = pairs_from_samples(problems, [right + wrong], [[True] * 4 + [False] * 6], seed=1, min_pairs=0,
                               pairs_per_problem=100)
    combos = [(p.chosen, p.rejected) for p in pairs]
    assert len(combos) == 24 and set(combos) == {(r, w) for r in right for w in wrong}
    first = combos[:6]   # the first six pairs already use all six wrong samples
    assert len({w for _, w in first}) == 6


def test_too_few_sampled_pairs_fall_back_to_gold_solutions(caplog):
    problems = _problems(3)
    texts = [["r0", "w0"], ["w1", "w1"], ["w2", "x2"]]
    correct = [[True, False], [False, False], [False, False]]
    with caplog.at_level(logging.WARNING):
        pairs = pairs_from_samples(problems, texts, correct, seed=0, min_pairs=3, pairs_per_problem=4)
    gold = [p for p in pairs if p.origin == "gold"]
    assert len(pairs) == 3 and len(gold) == 2
    assert all(p.chosen == f"work {p.prompt[1]} \\boxed{{{p.prompt[1]}}}" for p in gold)
    assert "gold worked solution" in caplog.text
    with pytest.raises(DataError, match="no usable pair"):
        pairs_from_samples(_problems(1), [["r"]], [[True]], seed=0, min_pairs=5, pairs_per_problem=4)


def test_encode_pairs_and_batch_layout(default_model_dir):
    from pipeline.core.models import load_tokenizer

    tokenizer = load_tokenizer(default_model_dir)
    pairs = [PreferencePair("What is 2+2?", "It is 4.", "It is 5."), PreferencePair("Hi?", "Yes", "No no")]
    encoded = encode_pairs(tokenizer, pairs, "Be brief.", max_length=512)
    assert tokenizer.decode(encoded[0].prompt).endswith("What is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert encoded[0].chosen[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded[0].chosen[:-1]) == "It is 4."
    batch = pair_batch(encoded, tokenizer.pad_token_id)
    assert len(batch) == 4 and batch.completion_mask.sum(-1).tolist() == [
        len(encoded[0].chosen), len(encoded[1].chosen), len(encoded[0].rejected), len(encoded[1].rejected)]
    # a prompt that leaves no room under max_length drops the pair
    short = len(encoded[1].prompt) + 1
    assert len(encode_pairs(tokenizer, pairs, "Be brief.", max_length=short)) == 1


def test_split_by_prompt_keeps_a_prompts_pairs_together():
    from pipeline.data.preference import EncodedPair

    pairs = [EncodedPair([i % 5], [1], [2, i]) for i in range(20)]
    train, held = split_by_prompt(pairs, 0.2, seed=0)
    assert len(train) + len(held) == 20 and held
    assert not {p.prompt[0] for p in train} & {p.prompt[0] for p in held}


def test_sampling_pairs_through_the_engine_falls_back_to_gold(tiny_model_dir, tmp_path, caplog):
    """The tiny random model answers nothing right: every pair is gold solution vs a wrong sample."""
    from pipeline.config import Config
    from datagen.synthetic import generate
    from pipeline.supervised.fit import start_stage
    from stages.pairs import preference_data

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(p.to_row()) + "\n" for p in generate(10, seed=0, levels=[1])))
    config = Config.model_validate({
        "output_dir": str(tmp_path), "device": "cpu", "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(data)}, "rollout": {"engine": "hf", "max_tokens": 4},
        "reward_model": {"num_problems": 6, "samples_per_problem": 2, "eval_fraction": 0.34},
    })
    out = tmp_path / "reward_model"
    with caplog.at_level(logging.WARNING):
        train, held, info = preference_data(config, config.reward_model, start_stage(config, out), out)
    assert info["pair_origins"] == {"gold": 3} and len(train) + len(held) == 3 and held
    assert "gold worked solution" in caplog.text
    saved = load_pairs(out / "pairs.jsonl")
    assert all(p.origin == "gold" and "\\boxed" in p.chosen and p.extra["answer"] for p in saved)
