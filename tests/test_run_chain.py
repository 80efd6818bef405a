"""`rlvr run` (stages/run.py): the whole chain on the tiny model with the HF engine, resumable."""

from __future__ import annotations

import json

import pytest

import stages.run
from pipeline.config import load_config

ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i),
         "solution": f"{i} + {i} = {2 * i}. The answer is \\boxed{{{2 * i}}}.", "level": 1, "source": "toy"}
        for i in range(12)]


@pytest.fixture
def chain_config(tiny_model_dir, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))

    def make(*overrides: str):
        return load_config(None, [
            f"model.name={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", f"data.train={data}",
            f"data.test={data}", f"eval.dataset={data}", "rollout.engine=hf", "rollout.max_tokens=8",
            "reward.workers=1", "lora.rank=4", "sft.max_examples=8", "sft.batch_size=4",
            "sft.micro_batch_size=4", "sft.eval_fraction=0.25", "reward_model.num_problems=6",
            "reward_model.samples_per_problem=2", "reward_model.eval_fraction=0.34",
            "rl.steps=1", "rl.prompts_per_step=2", "rl.group_size=2", "rl.mini_batch_size=4",
            "rl.micro_batch_size=4", "rl.eval_every=0", "eval.problems=2", "eval.n=2", "eval.k=[1,2]",
            "eval.max_tokens=8", *overrides])

    return make, tmp_path / "run"


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_chain_runs_every_stage_then_skips_finished_ones(chain_config, monkeypatch, capsys, lora):
    make, out = chain_config
    config = make(f"lora.enabled={str(lora).lower()}")
    manifest = stages.run.main_with(config)

    sft_output = out / "sft" / ("adapter" if lora else "model")
    assert manifest["sft"]["output"] == str(sft_output) and sft_output.is_dir()
    assert 0.0 <= manifest["reward_model"]["pairwise_accuracy"] <= 1.0
    assert (out / "rl" / "checkpoint-1" / "adapter").is_dir()
    assert set(manifest["eval"]) == {"base", "sft", "dpo", "rl"}
    # DPO learnt from the reward model's pairs, starting from (and referenced to) the SFT output
    assert manifest["dpo"]["pairs_source"] == manifest["reward_model"]["pairs_file"]
    assert manifest["dpo"]["accuracy_before"] == 0.5 and manifest["dpo"]["margin_before"] == 0.0
    assert manifest["eval"]["dpo"]["checkpoint"] == manifest["dpo"]["output"]
    assert manifest["eval"]["sft"]["checkpoint"] == str(sft_output)
    assert json.loads((out / "manifest.json").read_text())["reward_model"] == manifest["reward_model"]
    table = capsys.readouterr().out
    assert "| stage |" in table and "| rl |" in table

    # Every stage finished: a second run reads their metrics instead of running them again.
    for name in ("sft", "reward_model", "dpo", "rl"):
        monkeypatch.setattr(getattr(stages.run, name), "main_with" if name != "rl" else "run",
                            lambda *a, **k: pytest.fail("a finished stage ran again"))
    monkeypatch.setattr(stages.run.evaluate, "run_eval", lambda *a, **k: pytest.fail("eval ran again"))
    again = stages.run.main_with(config)
    assert again["eval"] == manifest["eval"] and again["sft"] == manifest["sft"]


def test_downstream_stages_start_from_the_sft_output(tmp_path, tiny_model_dir):
    from pipeline.models import load_policy

    adapter, full = tmp_path / "adapter", tmp_path / "model"
    load_policy(tiny_model_dir, load_config().lora.model_copy(update={"rank": 4})).save_pretrained(adapter)
    load_policy(tiny_model_dir, load_config().lora.model_copy(update={"enabled": False})).save_pretrained(full)
    config = load_config(None, [f"model.name={tiny_model_dir}"])

    from_adapter = stages.run.starting_from(config, str(adapter)).model
    assert (from_adapter.name, from_adapter.adapter) == (str(tiny_model_dir), str(adapter))
    from_model = stages.run.starting_from(config, str(full)).model
    assert (from_model.name, from_model.adapter) == (str(full), None)
