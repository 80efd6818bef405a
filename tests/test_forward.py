"""The completion-only forward pass equals a plain full forward with log_softmax."""

import torch

from pipeline.core.forward import collate, completion_forward, pad_columns

from hand_tensors import parameter_grads


def _reference_logp(model, prompt, completion, temperature=1.0):
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0].float() / temperature
    logp = torch.log_softmax(logits, -1)
    P = len(prompt)
    return torch.stack([logp[P - 1 + t, tok] for t, tok in enumerate(completion)])


def test_collate_layout():
    batch = collate([[1, 2, 3], [4]], [[5], [6, 7, 8]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 5, 0, 0], [0, 0, 4, 6, 7, 8]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    assert batch.prompt_width == 3
    assert batch.completion_mask.tolist() == [[True, False, False], [True, True, True]]


def test_rows_trims_shared_padding():
    batch = collate([[1, 2, 3], [4]], [[5], [6, 7, 8]], pad_id=0)
    one = batch.rows([1])
    assert one.input_ids.tolist() == [[4, 6, 7, 8]]
    assert one.prompt_width == 1
    other = batch.rows([0])
    assert other.input_ids.tolist() == [[1, 2, 3, 5]] and other.completion_mask.tolist() == [[True]]


def test_completion_forward_matches_full_forward(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = [[10, 11, 12, 13, 14], [20, 21]]
    completions = [[30, 31], [40, 41, 42, 43]]
    batch = collate(prompts, completions, pad_id=2)
    for temperature in (1.0, 0.7):
        out = completion_forward(model, batch, temperature=temperature, with_entropy=True)
        assert out.logp.shape == (2, 4)
        for i in range(2):
            ref = _reference_logp(model, prompts[i], completions[i], temperature)
            torch.testing.assert_close(out.logp[i, : len(completions[i])], ref, atol=1e-4, rtol=1e-4)
        assert (out.entropy[batch.completion_mask] > 0).all()
    full = completion_forward(model, batch).logp
    trimmed = pad_columns(completion_forward(model, batch.rows([0])).logp, 4)
    torch.testing.assert_close(trimmed[0, :2], full[0, :2], atol=1e-4, rtol=1e-4)
    assert (trimmed[0, 2:] == 0).all()


def test_shared_prompt_forward_equals_completion_forward_with_gradients(tiny_model_dir):
    from pipeline.config import LoraConfig
    from pipeline.core.forward import shared_prompt_forward
    from pipeline.core.models import load_policy

    torch.manual_seed(0)
    model = load_policy(tiny_model_dir, LoraConfig(rank=4))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # a LoRA that changes the prompt's keys and values too
    # Two groups sharing prompts (of different lengths, so one is left-padded), rows interleaved.
    prompts = [[10, 11, 12, 13], [20, 21], [10, 11, 12, 13], [20, 21], [10, 11, 12, 13]]
    completions = [[30, 31, 32], [40], [50, 51, 52, 53], [60, 61], [70, 71]]
    batch = collate(prompts, completions, pad_id=2)
    results = []
    for forward in (completion_forward, shared_prompt_forward):
        out = forward(model, batch, temperature=0.7, with_entropy=True)
        results.append((out, parameter_grads(model, (out.logp * batch.completion_mask).sum())))
    (plain, plain_grads), (shared, shared_grads) = results
    mask = batch.completion_mask
    torch.testing.assert_close(shared.logp[mask], plain.logp[mask], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared.entropy[mask], plain.entropy[mask], atol=1e-5, rtol=1e-4)
    assert plain_grads.keys() == shared_grads.keys() and any("lora_A" in n for n in plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-3, msg=name)
