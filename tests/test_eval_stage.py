"""`rlvr eval` (stages/evaluate.py): single runs and `--compare` with a stub engine on the tiny model."""

from __future__ import annotations

import json

import pytest

from pipeline.rollout import Completion
from stages import evaluate as stage

PROBLEMS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "level": 1 + i % 2, "source": "toy"}
            for i in range(4)]


class StubEngine:
    """Answers every problem wrongly with the base weights and correctly once an adapter is pushed."""

    def __init__(self, tokenizer):
        self.tokenizer, self.pushed, self.log, self.closed = tokenizer, 0, [], False

    def update_weights(self, model) -> int:
        assert hasattr(model, "peft_config")  # a peft policy, not a merged copy
        self.pushed += 1
        return self.pushed

    def generate(self, prompts, sampling):
        self.log.append(self.pushed)
        groups = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            gold = next(p["answer"] for p in PROBLEMS if p["problem"] in text)
            answer = gold if self.pushed else "-1"
            groups.append([Completion(ids, [1, 2, 3], [0.0] * 3, f"\\boxed{{{answer}}}", "stop")] * sampling.n)
        return groups

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def setup(tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in PROBLEMS))
    engines = []

    def make_engine(config, model_path, *, device, policy=None, seed=0):
        from pipeline.core.models import load_tokenizer

        engines.append(StubEngine(load_tokenizer(model_path)))
        return engines[-1]

    monkeypatch.setattr(stage, "make_engine", make_engine)
    overrides = [f"model.name={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", f"eval.dataset={data}",
                 "eval.n=2", "eval.k=[1,2]", "eval.levels=[1,2]", "lora.rank=4", "reward.workers=1"]
    return tmp_path, overrides, engines


@pytest.fixture
def adapter(tiny_model_dir, tmp_path):
    from pipeline.config import LoraConfig
    from pipeline.core.models import load_policy

    path = tmp_path / "adapter"
    load_policy(tiny_model_dir, LoraConfig(rank=4)).save_pretrained(path)
    return path


def test_single_run_writes_report_and_summary(setup, capsys):
    tmp_path, overrides, engines = setup
    stage.main(overrides)
    out = tmp_path / "run" / "eval"
    report = json.loads((out / "report.json").read_text())
    assert len(report["samples"]) == 4 * 2 and report["summary"]["avg@2"] == 0.0
    assert report["summary"]["checkpoint"] == "base"
    assert "| avg@2 | 0.000 |" in (out / "summary.md").read_text()
    assert "| avg@2 | 0.000 |" in capsys.readouterr().out
    assert engines[0].closed and engines[0].pushed == 0


def test_compare_writes_table_and_chart(setup, adapter):
    tmp_path, overrides, engines = setup
    summaries = stage.main_with(*_parsed([*overrides, "--compare", f"rl={adapter}", "base"]))
    assert list(summaries) == ["rl", "base"]
    assert summaries["rl"]["avg@2"] == 1.0 and summaries["base"]["avg@2"] == 0.0
    assert engines[0].log == [0, 1]  # one engine; the base model before the adapter was pushed
    out = tmp_path / "run" / "eval"
    table = (out / "compare.md").read_text()
    assert "| metric | rl | base |" in table and "| avg@2 | 1.000 | 0.000 |" in table
    assert "| maj@2 | 1.000 | 0.000 |" in table
    # every checkpoint after the first: its difference from the first, paired over the same 4 problems
    assert "Difference from rl, paired over the same 4 problems" in table
    assert "| avg@2 | -1.000 [-1.000, -1.000] |" in table
    assert summaries["base"]["paired_difference"]["metrics"]["avg@2"]["diff"] == -1.0
    assert "paired_difference" not in summaries["rl"]
    assert json.loads((out / "compare.json").read_text()) == summaries
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "rl" / "report.json").is_file() and (out / "base" / "summary.md").is_file()


def test_missing_adapter_is_a_clear_error(setup):
    _, overrides, _ = setup
    with pytest.raises(SystemExit, match="checkpoint folder not found"):
        stage.main([*overrides, "--adapter", "no/such/adapter"])


def test_parse_checkpoints():
    assert stage.parse_checkpoints(["base", "sft=runs/a/sft", "runs/b/rl"]) == {
        "base": None, "sft": "runs/a/sft", "runs/b/rl": "runs/b/rl"}


def _parsed(argv):
    from stages.common import parse_config, parse_stage_args

    args = parse_stage_args(stage.build_parser(), argv)
    return parse_config(args), args


@pytest.mark.parametrize("argv", [
    ["configs/demo.yaml", "--compare", "base", "sft=runs/demo/sft/adapter", "eval.n=8", "seed=3"],
    ["configs/demo.yaml", "eval.n=8", "--compare", "base", "sft=runs/demo/sft/adapter", "seed=3"],
    ["eval.n=8", "--compare", "base", "sft=runs/demo/sft/adapter", "configs/demo.yaml", "seed=3"],
])
def test_overrides_after_compare_are_overrides(argv):
    config, args = _parsed(argv)
    assert args.compare == ["base", "sft=runs/demo/sft/adapter"] and args.config == "configs/demo.yaml"
    assert (config.eval.n, config.seed, config.output_dir) == (8, 3, "runs/demo")
    assert stage.checkpoints(config, args) == {"base": None, "sft": "runs/demo/sft/adapter"}


@pytest.fixture
def no_model(forbid):
    forbid("a model was loaded before the checkpoints were checked", (stage, "prepare_model"),
           (stage, "load_tokenizer"))


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "sft").mkdir(), "is not a checkpoint folder (no adapter_config.json or config.json)"),
    (lambda root: None, "checkpoint folder not found"),
    (lambda root: (root / "sft").write_text("a file"), "is a file, not a checkpoint folder"),
])
def test_bad_compare_checkpoint_fails_before_any_model_loads(setup, adapter, no_model, make, message, capsys):
    tmp_path, overrides, engines = setup
    make(tmp_path)
    with pytest.raises(SystemExit) as info:
        stage.main([*overrides, "--compare", "base", f"rl={adapter}", f"sft={tmp_path / 'sft'}", "eval.n=1"])
    assert "checkpoint 'sft': " in str(info.value) and message in str(info.value)
    assert engines == [] and not (tmp_path / "run").exists()


def test_not_a_checkpoint_lists_the_checkpoints_inside(setup, adapter, no_model):
    tmp_path, overrides, _ = setup
    with pytest.raises(SystemExit, match=f"found: {adapter}"):
        stage.main([*overrides, "--compare", "base", f"rl={tmp_path}"])


def test_dry_run_checks_checkpoints_and_loads_nothing(setup, adapter, no_model, capsys):
    tmp_path, overrides, engines = setup
    stage.main([*overrides, "--dry-run", "--compare", "base", f"rl={adapter}", "eval.n=8"])
    out = capsys.readouterr().out
    assert "dry run: every check passed" in out and f"checkpoint rl: {adapter} (LoRA adapter)" in out
    assert "eval.dataset" in out and "4 problems" in out
    assert engines == [] and not (tmp_path / "run").exists()


def test_levels_select_the_problems(setup):
    tmp_path, overrides, _ = setup
    stage.main([*overrides, "eval.levels=[2]"])
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert {p["level"] for p in report["problems"]} == {2} and len(report["problems"]) == 2
