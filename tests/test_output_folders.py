"""A stage refuses an output folder holding an earlier run's results unless --resume or --overwrite
says what to do with them; the refusal comes before any model loads and deletes nothing."""

from __future__ import annotations

import json

import pytest

import stages.dpo
import stages.evaluate
import stages.export
import stages.reward_model
import stages.rl
import stages.sft


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("module, folder, hint", [
    (stages.sft, "sft", "--overwrite"),
    (stages.reward_model, "reward_model", "--overwrite"),
    (stages.dpo, "dpo", "--overwrite"),
    (stages.rl, "rl", "--resume to continue it, --overwrite"),
    (stages.evaluate, "eval", "--overwrite"),
    (stages.export, "export", "--overwrite"),
])
def test_a_stage_refuses_a_folder_with_results(tmp_path, monkeypatch, module, folder, hint):
    monkeypatch.setattr(module, "main_with", lambda *a: pytest.fail("the stage started"))
    out = tmp_path / folder
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "metrics.json").write_text('{"done": true}')
    before = _snapshot(out)
    with pytest.raises(SystemExit) as exit_info:
        module.main([f"output_dir={tmp_path}"])
    message = str(exit_info.value)
    assert str(out) in message and hint in message and "\n" not in message
    assert _snapshot(out) == before


def test_a_folder_holding_only_the_config_record_is_empty(tmp_path):
    from stages.common import check_output_folder, stage_parser
    from pipeline.config import load_config

    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.yaml").write_text("seed: 0\n")  # a start that failed before any result
    args = stage_parser("sft", "").parse_args([])
    check_output_folder(load_config(None, [f"output_dir={tmp_path}"]), args)


@pytest.mark.parametrize("argv, words", [
    (["--resume"], "keeps no checkpoints"),
    (["--resume", "--overwrite"], "contradict"),
])
def test_resume_is_for_rl_only(tmp_path, monkeypatch, argv, words):
    monkeypatch.setattr(stages.sft, "main_with", lambda *a: pytest.fail("the stage started"))
    with pytest.raises(SystemExit) as exit_info:
        stages.sft.main([f"output_dir={tmp_path}", *argv])
    assert "--resume" in str(exit_info.value) and words in str(exit_info.value)


def test_overwrite_keeps_the_finished_marker_until_results_are_written(tmp_path, tiny_model_dir):
    """A stage that fails its data checks after `--overwrite` leaves the earlier run's marker in place."""
    marker = tmp_path / "sft" / "metrics.json"
    marker.parent.mkdir()
    marker.write_text(json.dumps({"output": "earlier"}))
    with pytest.raises(SystemExit) as exit_info:
        stages.sft.main([f"output_dir={tmp_path}", f"model.name={tiny_model_dir}",
                         f"data.train={tmp_path / 'missing.jsonl'}", "--overwrite"])
    assert "missing.jsonl" in str(exit_info.value)
    assert json.loads(marker.read_text()) == {"output": "earlier"}


@pytest.mark.parametrize("stage, flag", [("rl", "--resume"), ("rl", "--overwrite"), ("sft", "--overwrite")])
def test_resume_or_overwrite_lets_a_stage_use_its_folder(tmp_path, stage, flag):
    from stages.common import check_output_folder, stage_parser
    from pipeline.config import load_config

    (tmp_path / stage / "checkpoint-3").mkdir(parents=True)
    args = stage_parser(stage, "").parse_args([flag])
    check_output_folder(load_config(None, [f"output_dir={tmp_path}"]), args)
    assert (tmp_path / stage / "checkpoint-3").is_dir()
