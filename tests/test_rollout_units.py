"""Rollout pieces that need no engine process: settings, records, engine choice, RAM exchange."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import RolloutConfig
from pipeline.rollout import (Completion, EngineUnavailable, HFEngine, SamplingSettings, make_engine,
                              resolve_engine, resolve_sync)
from pipeline.rollout import factory
from pipeline.rollout.weights import ram_dir, weights_payload


def test_sampling_settings_from_config():
    config = RolloutConfig(temperature=0.7, top_p=0.9, top_k=20, max_tokens=64, stop=["</answer>"])
    s = SamplingSettings.from_config(config, n=4)
    assert (s.n, s.temperature, s.top_p, s.top_k, s.max_tokens, s.stop) == (4, 0.7, 0.9, 20, 64, ["</answer>"])
    assert not s.greedy and SamplingSettings(temperature=0.0).greedy
    with pytest.raises(ValueError):
        SamplingSettings(n=0)


def test_completion_record():
    c = Completion([1, 2], [5, 6], [-0.1, -0.2], "hi", "length")
    assert c.truncated
    assert not Completion([1], [2], [-0.5], "", "stop").truncated
    with pytest.raises(ValueError):
        Completion([1], [2, 3], [-0.5], "", "stop")


def test_engine_choice(monkeypatch):
    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    assert resolve_engine("auto") == "hf" and resolve_engine("hf") == "hf"
    with pytest.raises(EngineUnavailable, match=r"pip install -e \.\[cpu\].*\.\[gpu\]"):
        resolve_engine("vllm")
    monkeypatch.setattr(factory, "vllm_available", lambda: True)
    assert resolve_engine("auto") == "vllm"


def test_sync_choice(tiny_policy_factory, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    assert resolve_sync("auto", "cpu") == "merged"
    assert resolve_sync("auto", torch.device("cuda")) == "adapter"
    assert resolve_sync("adapter", "cpu") == "adapter"
    assert resolve_sync("auto", "cuda", tiny_policy_factory(scale=0.0)) == "adapter"
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert resolve_sync("auto", "cuda", plain) == "merged"  # no adapter to hand over
    with pytest.raises(ValueError, match="sync=merged"):
        weights_payload(plain, "adapter", torch.float32, version=1)


def test_make_hf_engine_serves_the_policy(tiny_policy_factory, tiny_model_dir):
    policy = tiny_policy_factory(scale=0.0)
    engine = make_engine(RolloutConfig(engine="hf"), tiny_model_dir, device="cpu", policy=policy)
    assert isinstance(engine, HFEngine) and engine.model is policy and engine.version == 1


def test_ram_dir_is_private_and_in_memory():
    path = ram_dir()
    try:
        assert path.is_dir() and (path.stat().st_mode & 0o777) == 0o700
        if Path("/dev/shm").is_dir():
            assert path.parent == Path("/dev/shm")
    finally:
        path.rmdir()
