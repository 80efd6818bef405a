"""Data layer: loaders and presets, error messages, reasoning-gym, prompts, prompt order, export."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from datagen import export as export_data
from pipeline.config import DEFAULT_SYSTEM_PROMPT, DataConfig
from pipeline.data.problems import DataError, Problem, last_boxed, load_problems, load_problems_for
from pipeline.core.tokens import prompt_ids, render_prompt
from pipeline.data.prompts import PromptStream, encode_prompts, filter_long_prompts

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- local files and presets ---------------------------------------------------------------


def test_rlvr_jsonl_round_trip(tmp_path: Path) -> None:
    rows = [
        {"problem": "1+1?", "answer": "2", "solution": "\\boxed{2}", "level": 1, "source": "s/a", "tests": ["assert 1"]},
        {"problem": "2+2?", "answer": 4},
    ]
    problems = load_problems(str(_jsonl(tmp_path / "mine.jsonl", rows)))
    assert problems[0] == Problem("1+1?", "2", "\\boxed{2}", 1, "s/a", {"tests": ["assert 1"]})
    assert problems[1] == Problem("2+2?", "4", "", 0, "mine")
    assert problems[0].to_row() == rows[0]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem": "x?", "answer": "3", "level": 2}]), path)
    assert load_problems(str(path)) == [Problem("x?", "3", "", 2, "p")]


def test_gsm8k_preset(tmp_path: Path) -> None:
    row = {"question": "Tom has 3 bags of 4. How many?", "answer": "3 bags of 4 is 3*4=<<3*4=12>>12.\n#### 1,200"}
    (p,) = load_problems(str(_jsonl(tmp_path / "g.jsonl", [row])))
    assert p.answer == "1200"
    assert p.solution == "3 bags of 4 is 3*4=12.\nThe answer is \\boxed{1200}"


def test_math_preset(tmp_path: Path) -> None:
    rows = [
        {"problem": "Half?", "solution": "So $\\boxed{2}$ no, \\boxed{\\frac{1}{2}}.", "level": "Level 3", "type": "Algebra"},
        {"problem": "Q", "solution": "\\boxed{1}", "answer": "7", "level": "Level ?"},
    ]
    first, second = load_problems(str(_jsonl(tmp_path / "m.jsonl", rows)), preset="math")
    assert (first.answer, first.level, first.extra) == ("\\frac{1}{2}", 3, {"type": "Algebra"})
    assert (second.answer, second.level) == ("7", 0)
    assert load_problems(str(tmp_path / "m.jsonl"))[0].answer == "\\frac{1}{2}"  # auto -> math


def test_aime_preset_capitalised_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "aime.jsonl", [{"ID": "2024-I-1", "Problem": "Find x.", "Answer": 204}])
    (p,) = load_problems(str(path))
    assert (p.problem, p.answer, p.extra) == ("Find x.", "204", {"ID": "2024-I-1"})
    assert load_problems(str(path), preset="aime") == [p]


def test_trl_prompt_and_solution_layout_is_detected(tmp_path: Path) -> None:
    """TRL's / open-r1's `prompt` (text or a message list) + `solution` (a bare gold answer, or a worked
    solution whose last box is the answer) under `data.preset: auto`."""
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6*7?"}]
    rows = [{"prompt": "What is 2+3?", "solution": "5", "source_id": 9},
            {"prompt": conversation, "solution": "6*7 = 42, so the answer is $\\boxed{42}$."}]
    path = _jsonl(tmp_path / "trl.jsonl", rows)
    plain, chat = load_problems(str(path))
    assert (plain.problem, plain.answer, plain.solution, plain.extra) == ("What is 2+3?", "5", "", {"source_id": 9})
    assert (chat.problem, chat.answer, chat.messages) == ("What is 6*7?", "42", conversation)
    assert chat.solution == rows[1]["solution"]  # a worked solution: SFT trains on it
    assert load_problems(str(path), preset="trl") == [plain, chat]
    assert load_problems_for(DataConfig(train=str(path)), "train", seed=0) == [plain, chat]


def test_explicit_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [{"prompt": "Q?", "gold": "5", "difficulty": 4}])
    (p,) = load_problems(str(path), columns={"problem": "prompt", "answer": "gold", "level": "difficulty"})
    assert (p.problem, p.answer, p.level, p.extra) == ("Q?", "5", 4, {})


def test_last_boxed() -> None:
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{a}{b}} c") == "\\frac{a}{b}"
    assert last_boxed("no answer") is None
    assert last_boxed("\\boxed{unclosed") is None


# ---- bad input -----------------------------------------------------------------------------


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_problems(str(path), **kwargs)
    return str(info.value)


def test_missing_answer_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n\n{"problem": "b"}\n')
    message = _error(path)
    assert str(path) in message and "line 3" in message and "'answer'" in message


def test_missing_problem(tmp_path: Path) -> None:
    message = _error(_jsonl(tmp_path / "p.jsonl", [{"problem": "a", "answer": "1"}, {"problem": " ", "answer": "2"}]))
    assert "line 2" in message and "'problem'" in message


def test_wrong_column_name(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [{"problem": "a", "answer": "1"}])
    message = _error(path, columns={"problem": "question_text"})
    assert str(path) in message and "line 1" in message and "'question_text'" in message and "'problem'" in message
    assert "field" in _error(path, columns={"prob": "problem"})


def test_unknown_layout(tmp_path: Path) -> None:
    message = _error(_jsonl(tmp_path / "u.jsonl", [{"text": "a", "label": "1"}]))
    assert "data.preset" in message and "text" in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert str(path) in _error(path) and "empty" in _error(path)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", answer: 2}\n')
    message = _error(path)
    assert str(path) in message and "line 2" in message and "not valid JSON" in message
    path.write_text('["a list"]\n')
    assert "line 1" in _error(path) and "JSON object" in _error(path)


def test_not_parquet_and_not_found(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_text("hello")
    assert "Parquet" in _error(path)
    assert "not found" in _error(tmp_path / "missing.jsonl")


# ---- hub and reasoning-gym -------------------------------------------------------------------


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, load) -> None:
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load))


def test_hub_dataset_is_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load(repo, config, split):
        calls.append((repo, config, split))
        return [{"question": "Q", "answer": "x=<<1+1=2>>2\n#### 2"}]

    _fake_datasets(monkeypatch, load)
    (p,) = load_problems("openai/gsm8k:main", split="test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert (p.answer, p.source) == ("2", "openai/gsm8k:main")


def test_hub_unreachable_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(repo, config, split):
        raise ConnectionError("Couldn't reach 'someone/data' on the Hub (LocalEntryNotFoundError)\nmore details")

    _fake_datasets(monkeypatch, load)
    with pytest.raises(DataError) as info:
        load_problems("someone/data")
    message = str(info.value)
    assert "\n" not in message and "hub" in message and ".jsonl" in message and "someone/data" in message


def test_reasoning_gym_on_the_fly() -> None:
    problems = load_problems("reasoning_gym/chain_sum?size=6&seed=3&max_terms=2&max_digits=1")
    assert len(problems) == 6 and all(p.source == "reasoning_gym/chain_sum" for p in problems)
    for p in problems:
        assert eval(p.extra["metadata"]["expression"]) == int(p.answer)  # noqa: S307 - digits and +/- only
    assert load_problems("reasoning_gym/chain_sum?size=6&seed=3&max_terms=2&max_digits=1") == problems
    assert len(load_problems("reasoning_gym/chain_sum", gym_size=4, seed=1)) == 4
    gsm = load_problems("reasoning_gym/gsm_symbolic?size=2")
    assert all(p.solution.endswith(f"\\boxed{{{p.answer}}}") for p in gsm)


def test_reasoning_gym_errors() -> None:
    with pytest.raises(DataError, match="not_a_task"):
        load_problems("reasoning_gym/not_a_task")
    with pytest.raises(DataError, match="bogus"):
        load_problems("reasoning_gym/chain_sum?bogus=1")
    with pytest.raises(DataError, match="key=value"):
        load_problems("reasoning_gym/chain_sum?size")


# ---- filtering -----------------------------------------------------------------------------


def test_filters_and_limit(tmp_path: Path) -> None:
    rows = [{"problem": f"q{i}", "answer": str(i), "level": i % 3 + 1, "source": f"gym/t{i % 2}"} for i in range(30)]
    path = str(_jsonl(tmp_path / "f.jsonl", rows))
    assert {p.level for p in load_problems(path, levels=[1, 2])} == {1, 2}
    assert {p.source for p in load_problems(path, sources=["gym/t1"])} == {"gym/t1"}
    assert len(load_problems(path, sources=["gym"])) == 30
    subset = load_problems(path, limit=5, seed=1)
    assert len(subset) == 5 and subset == load_problems(path, limit=5, seed=1)
    assert [int(p.answer) for p in subset] == sorted(int(p.answer) for p in subset)
    with pytest.raises(DataError, match="no problems left"):
        load_problems(path, levels=[5])


def test_load_problems_for(tmp_path: Path) -> None:
    train = _jsonl(tmp_path / "train.jsonl", [{"problem": f"t{i}", "answer": "1", "level": 1} for i in range(5)])
    test = _jsonl(tmp_path / "test.jsonl", [{"problem": f"e{i}", "answer": "1", "level": 2} for i in range(5)])
    config = DataConfig(train=str(train), test=str(test), limit=3, test_limit=2)
    assert len(load_problems_for(config, "train")) == 3
    assert [p.level for p in load_problems_for(config, "test")] == [2, 2]
    gym = DataConfig(train="reasoning_gym/chain_sum", test="reasoning_gym/chain_sum", gym_size=20)
    assert not {p.problem for p in load_problems_for(gym, "train")} & {p.problem for p in load_problems_for(gym, "test")}


# ---- prompts -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path):
    from pipeline.core.models import load_tokenizer

    return load_tokenizer(default_model_dir)


def test_render_prompt_uses_the_chat_template(tokenizer) -> None:
    text = render_prompt(tokenizer, "What is 7 + 5?", DEFAULT_SYSTEM_PROMPT)
    assert text.index(DEFAULT_SYSTEM_PROMPT) < text.index("What is 7 + 5?")
    assert text.endswith("<|im_start|>assistant\n")


def test_render_prompt_without_template() -> None:
    plain = types.SimpleNamespace(chat_template=None)
    assert render_prompt(plain, "Q?", "Be brief.") == "Be brief.\n\nQ?\n"


def test_encode_prompts_and_length_limit(tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    problems = [Problem("What is 1 + 1?", "2"), Problem("What is " + " + ".join(["1"] * 200) + "?", "200")]
    (ids,) = encode_prompts(tokenizer, problems[:1], DEFAULT_SYSTEM_PROMPT, 384)
    assert ids == tokenizer(render_prompt(tokenizer, problems[0].problem, DEFAULT_SYSTEM_PROMPT))["input_ids"]
    with pytest.raises(DataError, match="data.max_prompt_tokens=384"):
        encode_prompts(tokenizer, problems, DEFAULT_SYSTEM_PROMPT, 384)
    with caplog.at_level(logging.WARNING):
        assert filter_long_prompts(tokenizer, problems, DEFAULT_SYSTEM_PROMPT, 384) == problems[:1]
    assert "skipped 1 of 2" in caplog.text


def test_prompt_ids_take_a_problem_or_an_already_rendered_prompt(tokenizer) -> None:
    problem = Problem("What is 7 + 5?", "12")
    rendered = render_prompt(tokenizer, problem.problem, DEFAULT_SYSTEM_PROMPT)
    ids = prompt_ids(tokenizer, problem, DEFAULT_SYSTEM_PROMPT)
    assert ids == prompt_ids(tokenizer, problem.problem, DEFAULT_SYSTEM_PROMPT)
    assert ids == prompt_ids(tokenizer, rendered, "another system prompt")  # used as is, not rendered twice
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant


def test_shipped_test_prompts_fit(tokenizer) -> None:
    problems = load_problems(str(REPO / "datasets/test.jsonl"))
    assert filter_long_prompts(tokenizer, problems, DEFAULT_SYSTEM_PROMPT, DataConfig().max_prompt_tokens) == problems


# ---- prompt order --------------------------------------------------------------------------


def _problems(n: int) -> list[Problem]:
    return [Problem(f"q{i}", str(i)) for i in range(n)]


def test_prompt_stream_epochs() -> None:
    stream = PromptStream(_problems(10), batch_size=5, seed=0)
    first, second = stream.next_batch() + stream.next_batch(), stream.next_batch() + stream.next_batch()
    assert sorted(p.answer for p in first) == sorted(p.answer for p in second) == sorted(str(i) for i in range(10))
    assert first != second and stream.epoch == 1
    assert PromptStream(_problems(10), 5, seed=0).next_batch() == first[:5]
    assert PromptStream(_problems(10), 5, seed=1).next_batch() != first[:5]


def test_prompt_stream_resume_matches_uninterrupted_run() -> None:
    problems = _problems(7)
    straight = PromptStream(problems, batch_size=3, seed=4)
    expected = [straight.next_batch() for _ in range(8)]
    interrupted = PromptStream(problems, batch_size=3, seed=4)
    done = [interrupted.next_batch() for _ in range(3)]
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = PromptStream(problems, batch_size=3, seed=4)
    resumed.load_state_dict(state)
    assert done + [resumed.next_batch() for _ in range(5)] == expected
    with pytest.raises(DataError, match="cannot resume"):
        PromptStream(_problems(8), batch_size=3, seed=4).load_state_dict(state)


# ---- export and the shipped files ----------------------------------------------------------


def test_export_is_deterministic_stratified_and_disjoint(tmp_path: Path) -> None:
    train, test = export_data.export(seed=3, out=tmp_path, train_size=100, test_size=40)
    assert export_data.build(seed=3, train_size=100, test_size=40) == (train, test)
    assert Counter(p.level for p in train) == {1: 40, 2: 30, 3: 20, 4: 5, 5: 5}
    assert Counter(p.level for p in test) == {1: 16, 2: 12, 3: 8, 4: 2, 5: 2}
    assert load_problems(str(tmp_path / "test.jsonl")) == test
    assert "version" in (tmp_path / "README.md").read_text()


def test_shipped_datasets() -> None:
    train = load_problems(str(REPO / "datasets/train.jsonl"))
    test = load_problems(str(REPO / "datasets/test.jsonl"))
    assert len(train) >= 5000 and len(test) >= 300
    norm = export_data.normalize
    assert not {norm(p.problem) for p in train} & {norm(p.problem) for p in test}
    for problems in (train, test):
        shares = Counter(p.level for p in problems)
        assert set(shares) == {1, 2, 3, 4, 5}
        assert abs(shares[1] / len(problems) - 0.4) < 0.02 and abs(shares[2] / len(problems) - 0.3) < 0.02
        assert all(p.solution.endswith(f"\\boxed{{{p.answer}}}") for p in problems)
        assert all(p.source.startswith(("synthetic/", "reasoning_gym/")) for p in problems)


# ---- local or hub; GSM8K gold under any mapping ----------------------------------------------


@pytest.mark.parametrize("spec, hint", [
    ("datasets/train", "did you mean datasets/train.jsonl?"),
    ("datasets/trian.jsonl", "did you mean datasets/train.jsonl"),
    ("datasets", "is a folder, not a data file; files in it: datasets/test.jsonl"),
    ("nowhere/train.parquet", "data file not found: nowhere/train.parquet"),
])
def test_local_names_never_go_to_the_hub(spec, hint, tmp_path, monkeypatch) -> None:
    (tmp_path / "datasets").mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        _jsonl(tmp_path / "datasets" / name, [{"problem": "1+1?", "answer": "2"}])
    monkeypatch.chdir(tmp_path)
    _fake_datasets(monkeypatch, lambda *a, **k: pytest.fail("a local name was sent to the hub"))
    with pytest.raises(DataError) as info:
        load_problems(spec)
    assert hint in str(info.value) and "\n" not in str(info.value)


def _hub_probe(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list:
    import huggingface_hub

    asked = []

    def dataset_info(self, repo, timeout=None, **_):
        asked.append((repo, timeout))
        raise error

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    _fake_datasets(monkeypatch, lambda *a, **k: pytest.fail("load_dataset would retry for ~30 s"))
    return asked


def test_unreachable_hub_fails_at_once_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.data.problems import HUB_TIMEOUT_S

    asked = _hub_probe(monkeypatch, OSError("[Errno -2] Name or service not known"))
    with pytest.raises(DataError) as info:
        load_problems("openai/gsm8k:main")
    message = str(info.value)
    assert asked == [("openai/gsm8k", HUB_TIMEOUT_S)] and HUB_TIMEOUT_S <= 5
    assert "\n" not in message and "cannot reach" in message and "HF_HUB_OFFLINE=1" in message


def test_unknown_hub_dataset_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    _hub_probe(monkeypatch, RepositoryNotFoundError("404", response=types.SimpleNamespace(
        headers={}, status_code=404, request=None, url="u")))
    with pytest.raises(DataError, match="neither a local file nor a dataset on the Hugging Face hub"):
        load_problems("someone/no-such-data")


GSM8K_ROWS = [{"q": "Natalia sold 48 clips in April and half as many in May. How many in all?",
               "a": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
              {"q": "Weng earns $12 an hour. How much for 50 minutes?", "a": "12/60 * 50 = 10\n#### 10"}]


@pytest.mark.parametrize("preset", ["auto", "rlvr", "aime"])
def test_gsm8k_gold_is_normalised_under_renamed_columns(tmp_path: Path, preset: str, caplog) -> None:
    path = _jsonl(tmp_path / "renamed.jsonl", GSM8K_ROWS)
    with caplog.at_level(logging.WARNING):
        problems = load_problems(str(path), preset=preset, columns={"problem": "q", "answer": "a"})
    assert [p.answer for p in problems] == ["72", "10"]
    assert problems[0].solution.endswith("\\boxed{72}") and "<<" not in problems[0].solution
    assert "worked solutions" not in caplog.text


def test_gold_that_looks_like_a_solution_is_warned_about(tmp_path: Path, caplog) -> None:
    rows = [{"problem": "What is 2+3?", "sol": "We add the two numbers.\nTwo plus three is five, so the answer is 5.",
             "final": "5"}] * 3
    path = _jsonl(tmp_path / "swapped.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        problems = load_problems(str(path), columns={"problem": "problem", "answer": "sol"})
    assert len(problems) == 3
    assert "3 of 3 gold answers (column 'sol') look like worked solutions" in caplog.text
    assert "line 1" in caplog.text and "data.columns.answer" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_problems(str(path), columns={"problem": "problem", "answer": "final"})
    assert "worked solutions" not in caplog.text
