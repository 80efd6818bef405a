"""bf16 autocast with the model's layer inputs cast once (pipeline/core/optim.py `autocast(..., model)`,
`bf16_layer_inputs`): the same forward as plain autocast, gradients within bf16 rounding of it, fewer
casts, and nothing left behind on the model after the block."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from pipeline.config import LoraConfig
from pipeline.core.forward import collate, shared_prompt_forward
from pipeline.core.models import load_policy
from pipeline.core.optim import autocast

from hand_tensors import parameter_grads

CPU = torch.device("cpu")


def _policy(model_dir, dtype: str = "float32"):
    torch.manual_seed(0)
    model = load_policy(model_dir, LoraConfig(rank=4), dtype=dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # every adapted layer changes the states
    return model


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompts, completions = [], []
    for _ in range(2):
        prompt = torch.randint(3, 400, (int(torch.randint(4, 9, (1,), generator=g)),), generator=g).tolist()
        for _ in range(3):
            prompts.append(prompt)
            completions.append(torch.randint(3, 400, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist())
    return collate(prompts, completions, pad_id=2)


def _run(model, batch, cast_once: bool):
    """(logp, entropy, LoRA gradients, casts counted by the profiler) of one forward + backward."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with autocast(CPU, True, model if cast_once else None):
            out = shared_prompt_forward(model, batch, with_entropy=True)
        grads = parameter_grads(model, (out.logp * batch.completion_mask).sum())
    casts = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    return out.logp.detach(), out.entropy.detach(), grads, casts


@pytest.mark.parametrize("seed", [0, 1])
def test_layer_inputs_cast_once_give_the_same_forward_and_close_gradients(tiny_fp32_model_dir, seed):
    model, batch = _policy(tiny_fp32_model_dir), _batch(seed)
    logp, entropy, grads, casts = _run(model, batch, cast_once=False)
    logp_once, entropy_once, grads_once, casts_once = _run(model, batch, cast_once=True)
    mask = batch.completion_mask
    # the same bf16 inputs reach every linear layer: the same forward, bit for bit
    assert torch.equal(logp_once[mask], logp[mask]) and torch.equal(entropy_once[mask], entropy[mask])
    assert grads_once.keys() == grads.keys() and len(grads) > 0
    for name, grad in grads.items():  # backward adds the projections' gradients in bf16 first
        torch.testing.assert_close(grads_once[name], grad, rtol=2e-2, atol=2e-2 * grad.abs().max().item())
    assert casts_once < casts, (casts_once, casts)  # 298 against 384 on this tiny model


def test_nothing_stays_on_the_model_after_the_block(tiny_fp32_model_dir):
    model = _policy(tiny_fp32_model_dir)
    modules = list(model.modules())
    flags = [getattr(m, "cast_input_dtype_enabled", True) for m in modules]
    block = autocast(CPU, True, model)  # nothing happens before the block is entered
    assert not any(m._forward_hooks for m in modules) and not torch.is_autocast_enabled("cpu")
    with block:
        assert any(m._forward_hooks for m in modules)
        assert not all(getattr(m, "cast_input_dtype_enabled", True) for m in modules)
    assert not any(m._forward_hooks for m in modules) and not torch.is_autocast_enabled("cpu")
    assert [getattr(m, "cast_input_dtype_enabled", True) for m in modules] == flags
    with autocast(CPU, False, model):  # autocast off: the model untouched
        assert not any(m._forward_hooks for m in modules)


def test_a_bf16_base_with_a_float32_adapter_runs_under_it(tiny_fp32_model_dir):
    """A base loaded in bf16 (`model.dtype: bfloat16`) keeps peft's float32 adapter: LoRA then
    reads the norm's bf16 output directly, which autocast's linear accepts."""
    model, batch = _policy(tiny_fp32_model_dir, dtype="bfloat16"), _batch()
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    logp, entropy, grads, _ = _run(model, batch, cast_once=True)
    assert torch.isfinite(logp[batch.completion_mask]).all() and grads
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_packed_passes_run_under_autocast_as_padded_ones(tiny_fp32_model_dir):
    """The CPU recipe packs (`rl.pack_sequences`) and autocasts where bf16 is native: under the
    learner's autocast the packed layout reads the same log-probs as the padded one, up to bf16
    rounding, and its gradients reach the same LoRA tensors."""
    from pipeline.core.packing import pack, packed_forward

    model, batch = _policy(tiny_fp32_model_dir), _batch(1)
    assert pack(batch).row_prompts.shape[1] > 1  # a row continues two groups' prompts
    outs = []
    for forward in (shared_prompt_forward, packed_forward):
        with autocast(CPU, True, model):
            out = forward(model, batch, with_entropy=True)
        outs.append((out.logp.detach(), parameter_grads(model, (out.logp * batch.completion_mask).sum())))
    (padded, padded_grads), (packed, packed_grads) = outs
    mask = batch.completion_mask
    torch.testing.assert_close(packed[mask], padded[mask], rtol=2e-2, atol=5e-2)
    assert packed_grads.keys() == padded_grads.keys() and len(packed_grads) > 0
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=5e-2, atol=5e-2 * grad.abs().max().item())
