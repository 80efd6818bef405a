"""Weight exchange: after `update_weights`, the engine's log-probs are the learner's (both modes)."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.rollout import HFEngine, SamplingSettings, SyncCheck, SyncError, check_sync, learner_logprobs
from pipeline.rollout.sync_check import SYNC_TOLERANCE_16BIT, served_policy
from pipeline.rollout.weights import merged_weights, weights_payload

CHANGED = 0.1  # nats: a LoRA B drawn from N(0, 1) moves the tiny model's log-probs this much


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from pipeline.core.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def probe(tokenizer):
    """A prompt and a fixed completion to score on both sides."""
    from pipeline.data.prompts import encode_prompts

    prompt = encode_prompts(tokenizer, ["What is 17 + 25? Put the final answer in \\boxed{}."], "", 384)[0]
    completion = tokenizer.encode("17 + 25 = 42, so the answer is \\boxed{42}.", add_special_tokens=False)
    return prompt, completion + [tokenizer.eos_token_id]


@pytest.fixture(scope="module")
def vllm_merged_bf16_engine(tiny_model_dir):
    """vLLM in bfloat16 on the tiny model, merged sync: pushed weights rounded to bf16 (what
    `rollout.dtype: auto` picks where bf16 is native, and on GPUs)."""
    from conftest import _tiny_vllm_engine

    engine = _tiny_vllm_engine(tiny_model_dir, "merged", dtype="bfloat16")
    yield engine
    engine.close()


def perturb_lora_b(policy, seed: int, scale: float = 1.0) -> None:
    """An in-place change of the adapter, as an optimiser step would make (a large one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn(param.shape, generator=generator) * scale)


def mean_abs_diff(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


@pytest.mark.vllm
@pytest.mark.parametrize("mode", ["adapter", "merged", "merged_bf16"])
def test_update_reaches_vllm(mode, request, tiny_policy_factory, tokenizer, probe):
    engine = request.getfixturevalue(f"vllm_{mode}_engine")
    policy = tiny_policy_factory(scale=0.0)  # a fresh adapter: the base model
    version = engine.update_weights(policy)
    before = check_sync(engine, policy, tokenizer, *probe)
    assert before.passed, str(before)
    greedy = SamplingSettings(n=1, temperature=0.0, max_tokens=6)
    engine.generate([probe[0]], greedy)  # leaves the prompt in vLLM's prefix cache

    perturb_lora_b(policy, seed=2)
    assert engine.update_weights(policy) == version + 1
    after = check_sync(engine, policy, tokenizer, *probe)
    assert after.passed, str(after)
    assert mean_abs_diff(after.engine, before.engine) > CHANGED
    # Sampling sees the new weights too (no stale prefix-cache blocks).
    c = engine.generate([probe[0]], greedy)[0][0]
    reference = learner_logprobs(policy, tokenizer.pad_token_id, c.prompt_ids, c.token_ids)
    assert mean_abs_diff(c.logprobs, reference) < after.tolerance


@pytest.mark.vllm
def test_adapter_versions_are_evicted(vllm_adapter_engine, tiny_policy_factory):
    engine = vllm_adapter_engine
    policy = tiny_policy_factory(scale=0.5, seed=3)
    for _ in range(2):
        version = engine.update_weights(policy)
    assert set(engine._llm.llm_engine.list_loras()) == {version}
    assert [p.name for p in engine._dir.iterdir()] == [f"adapter-v{version}"]


def test_merged_weights_leave_the_learner_alone(tiny_policy_factory):
    policy = tiny_policy_factory(scale=1.0, seed=4)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    merged = merged_weights(policy, torch.float32)
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in state.items())
    reference = copy.deepcopy(policy).merge_and_unload().state_dict()
    assert merged and set(merged) <= set(reference)
    assert any(name.endswith("q_proj.weight") for name in merged)
    for name, weight in merged.items():
        torch.testing.assert_close(weight, reference[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sync", ["merged", "adapter"])
def test_the_check_scores_the_weights_as_a_16_bit_engine_holds_them(tiny_policy_factory, sync):
    """A bf16 engine's rounding alone moved SmolLM2-135M's probe log-probs by ~0.1 nats, twice the
    tolerance, and stopped the demo: the learner's side is scored with exactly the tensors the push
    sends (`weights_payload`), and with the policy itself where the engine's dtype is its own."""
    policy = tiny_policy_factory(scale=1.0, seed=6)
    assert served_policy(policy, sync, torch.float32) is policy and served_policy(policy, sync, None) is policy
    served = {name.replace(".default", ""): tensor for name, tensor
              in served_policy(policy, sync, torch.bfloat16).named_parameters(remove_duplicate=False)}
    pushed = weights_payload(policy, sync, torch.bfloat16, version=1).tensors
    assert pushed and all(tensor.dtype == torch.bfloat16 for tensor in served.values())
    for name, tensor in pushed.items():
        assert torch.equal(served[name], tensor.to(torch.bfloat16)), name
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # the learner is left alone


def test_a_16_bit_engine_is_checked_against_the_rounded_weights_with_its_tolerance(tiny_policy_factory, tokenizer,
                                                                                  probe):
    policy = tiny_policy_factory(scale=1.0, seed=7)
    engine = HFEngine(served_policy(policy, None, torch.bfloat16), tokenizer)  # holds the weights in bf16
    report = check_sync(engine, policy, tokenizer, *probe)
    assert report.passed and report.mean_abs_diff == 0.0 and report.tolerance == SYNC_TOLERANCE_16BIT
    perturb_lora_b(policy, seed=8, scale=3.0)  # the engine keeps the old weights: a sync that did nothing
    stale = check_sync(engine, policy, tokenizer, *probe)
    assert not stale.passed


def test_hf_engine_serves_the_learner_module(tiny_policy_factory, tokenizer, probe):
    policy = tiny_policy_factory(scale=0.0)
    engine = HFEngine(policy, tokenizer)
    before = check_sync(engine, policy, tokenizer, *probe)
    perturb_lora_b(policy, seed=5)
    assert engine.update_weights(policy) == 1 and engine.model is policy
    after = check_sync(engine, policy, tokenizer, *probe)
    assert after.passed and after.mean_abs_diff < 1e-5
    assert mean_abs_diff(after.engine, before.engine) > CHANGED


class StaleEngine(HFEngine):
    """A broken weight sync: `update_weights` counts a new version but keeps serving the module it started with."""

    def update_weights(self, model) -> int:
        self.version += 1
        return self.version


def test_sync_check_passes_a_working_sync_and_stops_a_broken_one(tiny_policy_factory, tokenizer, probe):
    policy = tiny_policy_factory(scale=0.0)
    stale = StaleEngine(copy.deepcopy(policy), tokenizer)
    working = HFEngine(policy, tokenizer)
    check = SyncCheck.build(tokenizer, probe[0], every=1)
    assert check(stale, policy, tokenizer, step=0) == {"sync/logp_diff_mean": 0.0, "sync/logp_diff_max": 0.0}

    perturb_lora_b(policy, seed=2)
    stale.update_weights(policy)
    working.update_weights(policy)
    assert check(working, policy, tokenizer, step=1)["sync/logp_diff_max"] == 0.0
    with pytest.raises(SyncError, match=r"step 1: the rollout engine does not serve the learner's weights"):
        check(stale, policy, tokenizer, step=1)


@pytest.mark.parametrize("every, syncs, due", [(0, [1, 2, 10], []), (1, [1, 2, 3], [1, 2, 3]), (5, range(1, 11), [5, 10])])
def test_sync_check_runs_every_n_syncs_and_never_at_zero(tokenizer, every, syncs, due):
    check = SyncCheck.build(tokenizer, [1, 2, 3], every)
    assert [s for s in syncs if check.due(s)] == list(due)
    assert check.completion_ids and check.prompt_ids == [1, 2, 3]
