"""`rlvr run` (stages/run.py): the whole chain on the tiny model with the HF engine, resumable."""

from __future__ import annotations

import argparse
import json

import pytest

import stages.run
from pipeline.config import ConfigError, load_config

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
    # A key that says where or with what a stage runs changes nothing.
    stages.run.main_with(make(f"lora.enabled={str(lora).lower()}", "reward.workers=2"))

    # RL's learning rate changed: refused before anything runs, naming the key; nothing rewritten.
    changed = make(f"lora.enabled={str(lora).lower()}", "rl.lr=0.001")
    records = {p: p.read_bytes() for p in out.rglob("*.json")}
    with pytest.raises(ConfigError, match=r"\(rl: rl\.lr \(2e-05 -> 0\.001\)\);") as refused:
        stages.run.main_with(changed)
    assert "sft" not in str(refused.value) and "--overwrite" in str(refused.value)
    assert {p: p.read_bytes() for p in out.rglob("*.json")} == records
    # --overwrite re-runs rl (from scratch, not resuming the earlier run) and eval; not the stages before.
    calls = []
    monkeypatch.setattr(stages.run.rl, "run", lambda cfg, resume: calls.append(("rl", resume)) or {"output": "x"})
    monkeypatch.setattr(stages.run.evaluate, "run_eval", lambda cfg, ckpts, **_: calls.append(("eval", ckpts["rl"]))
                        or manifest["eval"])
    stages.run.main_with(changed, argparse.Namespace(resume=False, overwrite=True))
    assert calls == [("rl", False), ("eval", "x")]
    assert json.loads((out / "rl" / "inputs.json").read_text())["keys"]["rl.lr"] == 0.001
    assert stages.run.Chain(changed).stale() == {}


def test_downstream_stages_start_from_the_sft_output(tmp_path, tiny_model_dir):
    from pipeline.core.models import load_policy

    adapter, full = tmp_path / "adapter", tmp_path / "model"
    load_policy(tiny_model_dir, load_config().lora.model_copy(update={"rank": 4})).save_pretrained(adapter)
    load_policy(tiny_model_dir, load_config().lora.model_copy(update={"enabled": False})).save_pretrained(full)
    config = load_config(None, [f"model.name={tiny_model_dir}"])

    from_adapter = stages.run.starting_from(config, str(adapter)).model
    assert (from_adapter.name, from_adapter.adapter) == (str(tiny_model_dir), str(adapter))
    from_model = stages.run.starting_from(config, str(full)).model
    assert (from_model.name, from_model.adapter) == (str(full), None)


class _Weights:
    def save_pretrained(self, path):
        path.mkdir(parents=True)


def _finish(out, command, config, marker=True, record=True):
    """A stage folder as the chain leaves it: inputs.json when it started, metrics.json (with the
    inputs' hash) when it finished."""
    folder = out / stages.run.STAGES[command].folder
    folder.mkdir(parents=True)
    inputs = stages.run.stage_inputs(config, command)
    digest = stages.run.inputs_hash(inputs)
    if record:
        (folder / "inputs.json").write_text(json.dumps({"config_hash": digest, "keys": inputs}))
    if marker:
        (folder / "metrics.json").write_text(json.dumps({"config_hash": digest} if record else {}))
    return folder


def test_stale_stages_are_named_with_their_changed_keys(tmp_path):
    from pipeline.core.checkpoint import save_checkpoint

    config = load_config(None, [f"output_dir={tmp_path}"])
    for command in ("sft", "reward-model", "dpo"):
        _finish(tmp_path, command, config)
    rl = _finish(tmp_path, "rl", config, marker=False)  # RL killed: its checkpoints would be resumed
    save_checkpoint(rl, 3, _Weights(), {})

    assert stages.run.Chain(config).stale() == {}
    assert stages.run.Chain(load_config(None, [f"output_dir={tmp_path}", "eval.n=16", "device=cpu"])).stale() == {}
    changed = load_config(None, [f"output_dir={tmp_path}", "data.system_prompt=Be brief.", "dpo.beta=0.5",
                                 "algorithm.preset=dr_grpo"])
    stale = stages.run.Chain(changed).stale()
    assert list(stale) == ["sft", "reward-model", "dpo", "rl"]
    assert all(any(k.startswith("data.system_prompt (") for k in keys) for keys in stale.values())
    assert any(k.startswith("dpo.beta (0.1 -> 0.5)") for k in stale["dpo"])
    assert any(k.startswith("algorithm.advantage ('grpo' -> 'dr_grpo')") for k in stale["rl"])
    assert stages.run.Chain(changed, overwrite=True).check() == "sft"
    with pytest.raises(ConfigError, match="dpo.beta"):
        stages.run.Chain(changed).check()


def test_what_the_chain_did_not_make_is_not_trusted(tmp_path):
    from pipeline.core.checkpoint import save_checkpoint

    config = load_config(None, [f"output_dir={tmp_path}"])
    _finish(tmp_path, "sft", config, record=False)  # `rlvr sft` alone: no record of its config
    _finish(tmp_path, "dpo", config, record=False, marker=False)  # a started, unfinished stage runs afresh
    rl = _finish(tmp_path, "rl", config, marker=False, record=False)
    assert list(stages.run.Chain(config).stale()) == ["sft"]
    save_checkpoint(rl, 3, _Weights(), {})  # `rlvr rl` alone, killed
    assert list(stages.run.Chain(config).stale()) == ["sft", "rl"]
