"""The preflight's model checks (stages/preflight/model.py): the model reference resolves locally or on a
reachable hub, and the configured lengths fit the model's context, read from its config.json."""

from __future__ import annotations

import json
import re

import huggingface_hub
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.core.models import ModelError
from stages.preflight import check_context, check_model


def _hub_is(monkeypatch, answer):
    """The hub's model_info answers with `answer` (an exception to raise, or None: found); nothing cached."""
    def model_info(self, repo, timeout=None, **_):
        if answer is not None:
            raise answer

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name, **_: None)


@pytest.mark.parametrize("name", ["models/nope", "./nope", "checkpoints/run1/model"])
def test_a_local_model_name_must_exist(tmp_path, monkeypatch, name):
    """A name whose first path component exists here (or that starts with `.`) is local: not a hub id."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "smollm").mkdir(parents=True)
    (tmp_path / "models" / "smollm" / "config.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    _hub_is(monkeypatch, AssertionError("the hub was asked about a local name"))
    with pytest.raises(ModelError, match=f"model.name: model folder not found: {name}"):
        check_model(load_config(None, [f"model.name={name}"]))


def test_a_missing_model_folder_lists_the_model_folders_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "smollm").mkdir(parents=True)
    (tmp_path / "models" / "smollm" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"\(found: models/smollm\)"):
        check_model(load_config(None, ["model.name=models/smolm"]))


def test_an_unreachable_hub_model_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _hub_is(monkeypatch, OSError("[Errno -2] Name or service not known"))
    with pytest.raises(ModelError, match=r"^model.name: cannot reach the Hugging Face hub for 'org/model' within 5 s"):
        check_model(load_config(None, ["model.name=org/model"]))


def test_a_hub_model_offline_must_be_cached(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _hub_is(monkeypatch, AssertionError("the hub was asked offline"))
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    with pytest.raises(ModelError, match="'org/model' is not in the Hugging Face cache and HF_HUB_OFFLINE"):
        check_model(load_config(None, ["model.name=org/model"]))
    cached = tmp_path / "hf" / "config.json"
    cached.parent.mkdir()
    cached.write_text(json.dumps({"max_position_embeddings": 2048}))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name, **_: str(cached))
    assert "cached" in check_model(load_config(None, ["model.name=org/model"]))[0]


def test_a_reachable_hub_model_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _hub_is(monkeypatch, None)
    assert "on the hub" in check_model(load_config(None, ["model.name=org/model"]))[0]


def _model_folder(tmp_path, context: int):
    folder = tmp_path / "mymodel"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": context}))
    return folder


@pytest.mark.parametrize("stage, overrides, key", [
    ("rl", ["rollout.max_model_len=100000"], "rollout.max_model_len = 100000"),
    ("rl", ["rollout.max_model_len=100000", "rollout.max_tokens=90000"], "rollout.max_model_len = 100000"),
    ("sft", ["sft.max_length=100000"], "sft.max_length = 100000"),
    ("reward-model", ["reward_model.max_length=9000"], "reward_model.max_length = 9000"),
    ("dpo", ["dpo.max_length=9000"], "dpo.max_length = 9000"),
    ("eval", ["rollout.max_model_len=9000"], "rollout.max_model_len = 9000"),
    ("run", ["dpo.max_length=9000"], "dpo.max_length = 9000"),
])
def test_a_length_over_the_model_context_fails(tmp_path, stage, overrides, key):
    folder = _model_folder(tmp_path, 8192)
    config = load_config(None, [f"model.name={folder}", *overrides])
    with pytest.raises(ConfigError, match=f"^{re.escape(key)} exceeds the model's context of 8192 tokens"):
        check_context(config, stage)


def test_lengths_within_the_model_context_pass(tmp_path):
    folder = _model_folder(tmp_path, 8192)
    config = load_config(None, [f"model.name={folder}", "rollout.max_model_len=8192", "sft.max_length=8192"])
    assert check_context(config, "run") == ["model context: 8192 tokens"]
    assert check_context(config.model_copy(update={"model": config.model.model_copy(
        update={"name": "org/not-downloaded"})}), "rl") == []  # nothing on disk to read: the load checks it
