"""`rlvr export` (stages/export.py) and adapters that record an absolute base model (pipeline/core/models.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stages.export
from pipeline.config import LoraConfig, load_config
from pipeline.core.models import load_policy


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture
def trained_adapter(tiny_policy_factory, tiny_model_dir, tmp_path):
    """A LoRA adapter with non-zero B (it changes the outputs), saved with the tokenizer."""
    from transformers import AutoTokenizer

    policy = tiny_policy_factory(scale=0.5)
    folder = tmp_path / "rl" / "final" / "adapter"
    policy.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return policy, folder


def test_adapter_records_an_absolute_base_and_loads_from_any_directory(tiny_model_dir, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    monkeypatch.chdir(tiny_model_dir.parent)
    policy = load_policy(tiny_model_dir.name, LoraConfig(rank=4))  # a relative model folder
    policy.save_pretrained(tmp_path / "adapter")
    recorded = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(tiny_model_dir.resolve())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    assert loaded.peft_config["default"].base_model_name_or_path == recorded


def test_a_resumed_adapter_with_a_relative_base_is_saved_with_an_absolute_one(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    load_policy(tiny_model_dir.name, LoraConfig(rank=4)).save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "base_model_name_or_path": tiny_model_dir.name}))  # an older version's
    load_policy(tiny_model_dir.name, LoraConfig(), adapter=tmp_path / "old").save_pretrained(tmp_path / "new")
    recorded = json.loads((tmp_path / "new" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(tiny_model_dir.resolve())


def test_export_merges_the_adapter_into_a_model_transformers_loads(trained_adapter, tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy, _ = trained_adapter
    config = load_config(None, [f"output_dir={tmp_path}", f"model.name={tiny_model_dir}"])
    monkeypatch.chdir(tmp_path)  # the default checkpoint rl/final/adapter; base found from the adapter
    source = stages.export.main_with(config, stages.export.build_parser().parse_args(["--dtype", "float32"]))

    out = tmp_path / "export" / "model"
    assert source["output"] == str(out) and source["merged"] is True
    assert not any(p.name.startswith("adapter") for p in out.iterdir())
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.config.use_cache is True
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    assert torch.allclose(_logits(merged, ids), _logits(policy, ids), atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not torch.allclose(_logits(merged, ids), _logits(base, ids), atol=1e-3)  # the adapter mattered
    assert AutoTokenizer.from_pretrained(out)("2 + 2").input_ids == AutoTokenizer.from_pretrained(tiny_model_dir)(
        "2 + 2").input_ids
    assert json.loads((tmp_path / "export" / "source.json").read_text())["base_model"] == str(tiny_model_dir)


def test_export_keeps_the_base_dtype_by_default_and_takes_full_model_folders(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    full = tmp_path / "model"
    load_policy(tiny_model_dir, LoraConfig(enabled=False)).save_pretrained(full)  # float32, no tokenizer
    base = stages.export.base_model(load_config(None, [f"model.name={tiny_model_dir}"]), full)
    out = stages.export.export_model(full, base, tmp_path / "out")
    assert AutoConfig.from_pretrained(out).dtype == torch.bfloat16  # the base model's
    assert (out / "tokenizer_config.json").is_file()  # the base's tokenizer: the folder holds none
    out = stages.export.export_model(full, base, tmp_path / "out", dtype="float32")  # replaces the folder
    assert AutoConfig.from_pretrained(out).dtype == torch.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


@pytest.mark.parametrize("argv, words", [
    (["--checkpoint", "nowhere"], "--checkpoint: checkpoint folder not found: nowhere"),
    (["--checkpoint", "/nonexistent/adapter"], "--checkpoint: checkpoint folder not found: /nonexistent/adapter"),
    (["--checkpoint", "."], "--checkpoint: . is not a checkpoint folder (no adapter_config.json or config.json)"),
    (["--checkpoint", "notes.txt"], "--checkpoint: notes.txt is a file, not a checkpoint folder"),
    ([], "no trained weights in"),
])
def test_export_refuses_a_bad_checkpoint_before_loading(tmp_path, monkeypatch, argv, words):
    """Every missing or invalid checkpoint is one line, in the dry run too (the preflight checks it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    monkeypatch.setattr(stages.export, "export_model", lambda *a, **k: pytest.fail("a model was loaded"))
    for dry_run in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as exit_info:
            stages.export.main([f"output_dir={tmp_path / 'run'}", *argv, *dry_run])
        assert words in str(exit_info.value) and "\n" not in str(exit_info.value)


_SERVE = """
import json, sys
from pipeline.config import RolloutConfig
from pipeline.rollout import SamplingSettings, VLLMEngine
engine = VLLMEngine(sys.argv[1], RolloutConfig(gpu_memory_utilization=0.05, max_model_len=256, dtype="float32"),
                    sync="merged")
(group,) = engine.generate([[1, 5, 9]], SamplingSettings(n=1, temperature=0.0, max_tokens=4))
engine.close()
print(json.dumps(group[0].token_ids))
"""
"""Greedy decoding of [1, 5, 9] by vLLM serving the folder argv[1]; prints the token ids as JSON."""


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_serves_the_exported_folder(trained_adapter, tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    policy, adapter = trained_adapter
    out = stages.export.export_model(adapter, tiny_model_dir, tmp_path / "export" / "model", dtype="float32")
    # A child process serves the folder: vLLM's parallel state is process-wide, and closing a second
    # engine in this process would tear it down under the session's shared engines (conftest.py).
    served = subprocess.run([sys.executable, "-c", _SERVE, str(out)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=600)
    assert served.returncode == 0, served.stderr[-2000:]
    token_ids = json.loads(served.stdout.strip().splitlines()[-1])
    with torch.no_grad():  # greedy decoding of the adapter itself gives the same tokens
        expected = policy.generate(input_ids=torch.tensor([[1, 5, 9]]), max_new_tokens=4, do_sample=False)
    assert token_ids == expected[0, 3:].tolist()[: len(token_ids)]
