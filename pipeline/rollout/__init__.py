"""Rollout engines: sample groups of completions from the policy, and keep its weights in sync.

    engine = make_engine(config.rollout, model_path, device=device, policy=policy)
    groups = engine.generate(prompt_ids, SamplingSettings.from_config(config.rollout, n=8))
    engine.update_weights(policy)  # after each optimiser step
"""

from pipeline.rollout.base import Completion, EagerSubmit, Generation, RolloutEngine, SamplingSettings, SyncMode
from pipeline.rollout.factory import EngineUnavailable, make_engine, resolve_engine, resolve_sync
from pipeline.rollout.hf_engine import HFEngine
from pipeline.rollout.sync_check import SyncCheck, SyncError, SyncReport, check_sync, learner_logprobs
from pipeline.rollout.vllm_engine import VLLMEngine

__all__ = [
    "Completion", "EagerSubmit", "EngineUnavailable", "Generation", "HFEngine", "RolloutEngine", "SamplingSettings", "SyncCheck", "SyncError", "SyncMode", "SyncReport",
    "VLLMEngine", "check_sync", "learner_logprobs", "make_engine", "resolve_engine", "resolve_sync",
]
