"""`--resume` checks its checkpoint before any model loads (stages/preflight/resume.py): one that
does not fit the config names the key, a `latest` naming no complete checkpoint is an error, and a
folder without any checkpoint starts at step 0 with a warning when it replaces records."""

from __future__ import annotations

import json

import pytest

import stages.rl
from pipeline.config import ConfigError, load_config
from stages.preflight.resume import check_resume

LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _checkpoint(out, step, base, *, rank=16, targets=LINEAR, lora=True, latest=True):
    """A complete checkpoint-<step> as RL writes it (the weights' files themselves left out)."""
    folder = out / "rl" / f"checkpoint-{step}"
    (folder / "adapter").mkdir(parents=True)
    (folder / "trainer_state.pt").write_bytes(b"")
    if lora:
        modules = [f"model.layers.{i}.self_attn.{t}" if "proj" in t else t for i in (0, 1) for t in targets]
        (folder / "adapter" / "adapter_config.json").write_text(json.dumps(
            {"r": rank, "lora_alpha": 32, "target_modules": modules, "base_model_name_or_path": str(base),
             "peft_type": "LORA"}))
    else:
        (folder / "adapter" / "config.json").write_text((base / "config.json").read_text())
    if latest:
        (out / "rl" / "latest").write_text(folder.name)
    return folder


def _config(model, out, *overrides):
    return load_config(None, [f"model.name={model}", f"output_dir={out}", *overrides])


def test_a_checkpoint_that_fits_is_named(tiny_model_dir, tmp_path):
    folder = _checkpoint(tmp_path, 4, tiny_model_dir)
    assert check_resume(_config(tiny_model_dir, tmp_path), "rl") == [f"--resume: from {folder}"]
    assert check_resume(_config(tiny_model_dir, tmp_path, "lora.target_modules=[q_proj, k_proj, v_proj, o_proj, "
                                "gate_proj, up_proj, down_proj]"), "rl") == [f"--resume: from {folder}"]


@pytest.mark.parametrize("overrides, saved, words", [
    (["lora.rank=8"], {}, "rank 16, but lora.rank gives rank 8"),
    (["lora.alpha=8"], {}, "alpha 32, but lora.alpha=8 would rescale"),
    (["lora.enabled=false"], {}, "holds a LoRA adapter, but lora.enabled=false"),
    ([], {"lora": False}, "holds full model weights (no LoRA), but lora.enabled=true"),
    (["lora.target_modules=[q_proj, v_proj]"], {}, "lora.target_modules=['q_proj', 'v_proj'] selects"),
    ([], {"targets": ["q_proj", "v_proj"]}, "lora.target_modules=all-linear selects"),
])
def test_a_checkpoint_that_does_not_fit_names_the_key(tiny_model_dir, tmp_path, overrides, saved, words):
    _checkpoint(tmp_path, 4, tiny_model_dir, **saved)
    with pytest.raises(ConfigError, match=r"^--resume: .*checkpoint-4") as info:
        check_resume(_config(tiny_model_dir, tmp_path, *overrides), "rl")
    assert words in str(info.value) and "--overwrite" in str(info.value)


def test_a_checkpoint_of_another_architecture_names_model_name(tiny_model_dir, tmp_path):
    other = tmp_path / "wider"
    other.mkdir()
    settings = json.loads((tiny_model_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**settings, "hidden_size": 128}))
    _checkpoint(tmp_path, 4, tiny_model_dir)
    with pytest.raises(ConfigError, match=rf"architecture differs from model.name={other} \(hidden_size 64 vs 128\)"):
        check_resume(_config(other, tmp_path), "rl")


def test_latest_naming_no_complete_checkpoint_is_an_error(tiny_model_dir, tmp_path):
    _checkpoint(tmp_path, 4, tiny_model_dir)
    (tmp_path / "rl" / "checkpoint-6").mkdir()  # an empty folder, named by latest
    (tmp_path / "rl" / "latest").write_text("checkpoint-6")
    with pytest.raises(ConfigError, match=r"names 'checkpoint-6', not a complete checkpoint .*complete ones: "
                                          r"checkpoint-4 \(write one's name into"):
        check_resume(_config(tiny_model_dir, tmp_path), "rl")
    (tmp_path / "rl" / "latest").unlink()
    with pytest.raises(ConfigError, match=r"has no `latest` file .*complete ones: checkpoint-4"):
        check_resume(_config(tiny_model_dir, tmp_path), "rl")


def test_no_checkpoint_starts_at_step_0_and_warns_when_it_replaces_records(tiny_model_dir, tmp_path, caplog):
    config = _config(tiny_model_dir, tmp_path)
    assert check_resume(config, "rl") == [f"--resume: nothing to resume in {tmp_path / 'rl'}: starts at step 0"]
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "config.yaml").write_text("seed: 0\n")  # a start that stopped before any step
    assert check_resume(config, "rl")[0].startswith("--resume: nothing to resume")
    (tmp_path / "rl" / "metrics.jsonl").write_text('{"step": 0}\n')
    lines = check_resume(config, "rl")
    assert lines[0].startswith(f"warning: --resume: {tmp_path / 'rl'} holds no checkpoint: starts at step 0")
    assert "replaces the earlier run's records (metrics.jsonl)" in lines[0]
    assert caplog.records[-1].levelname == "WARNING"


def test_the_rl_stage_refuses_a_checkpoint_that_does_not_fit_before_the_model_loads(tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setattr(stages.rl, "Trainer", lambda *a, **k: pytest.fail("the model loaded"))
    _checkpoint(tmp_path, 4, tiny_model_dir)
    with pytest.raises(SystemExit) as info:
        stages.rl.main([f"model.name={tiny_model_dir}", f"output_dir={tmp_path}", "lora.rank=8", "--resume"])
    assert str(info.value).startswith("rlvr rl: --resume: ") and "lora.rank" in str(info.value)
