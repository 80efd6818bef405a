"""The fused head read (pipeline/core/logprobs.py `linear_logprobs`) against the head's logits read by
`token_logprobs` / `entropy_from_logits` (docs/algorithms.md §6, §9): the same log-probs, entropies
and gradients to the hidden states, within 1e-6 in float32, at any temperature, with top-k / top-p
truncation and with the entropy's gradient on or off; under bf16 autocast within bf16 rounding."""

import pytest
import torch

from pipeline.core.forward import collate, completion_forward
from pipeline.core import logprobs
from pipeline.core.logprobs import entropy_from_logits, linear_logprobs, token_logprobs

SAMPLINGS = [
    dict(temperature=1.0, top_k=-1, top_p=1.0),
    dict(temperature=0.7, top_k=-1, top_p=1.0),
    dict(temperature=1.3, top_k=40, top_p=1.0),
    dict(temperature=0.6, top_k=-1, top_p=0.8),
    dict(temperature=0.9, top_k=50, top_p=0.9),
]


def _head_and_inputs(seed: int = 0, rows: int = 3, width: int = 7, hidden: int = 16, vocab: int = 97,
                     scale: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, hidden, generator=g) * scale
    h = torch.randn(rows, width, hidden, generator=g)
    labels = torch.randint(0, vocab, (rows, width), generator=g)
    return weight, h, labels


def _reference(h, weight, labels, sampling, entropy_grad):
    logits = h @ weight.T
    logp = token_logprobs(logits, labels, sampling["temperature"], top_k=sampling["top_k"], top_p=sampling["top_p"])
    entropy = entropy_from_logits(logits if entropy_grad else logits.detach(), sampling["temperature"],
                                  top_k=sampling["top_k"], top_p=sampling["top_p"])
    return logp, entropy


def _grad(h, logp, entropy, weights):
    """d (sum w1 * logp + sum w2 * entropy) / d h, for fixed random per-token weights."""
    loss = (weights[0] * logp).sum() + (weights[1] * entropy).sum() if entropy.requires_grad else (weights[0] * logp).sum()
    return torch.autograd.grad(loss, h)[0]


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: f"T{s['temperature']}-k{s['top_k']}-p{s['top_p']}")
@pytest.mark.parametrize("entropy_grad", [False, True])
def test_fused_read_equals_reading_the_logits(sampling, entropy_grad):
    weight, h0, labels = _head_and_inputs()
    weights = torch.randn(2, *labels.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for fused in (False, True):
        h = h0.clone().requires_grad_(True)
        if fused:
            logp, entropy = linear_logprobs(h, weight, labels, sampling["temperature"], chunk_rows=5,
                                            top_k=sampling["top_k"], top_p=sampling["top_p"], with_entropy=True,
                                            entropy_grad=entropy_grad)
        else:
            logp, entropy = _reference(h, weight, labels, sampling, entropy_grad)
        assert entropy.requires_grad == entropy_grad
        results.append((logp.detach(), entropy.detach(), _grad(h, logp, entropy, weights)))
    (logp, entropy, grad), (fused_logp, fused_entropy, fused_grad) = results
    torch.testing.assert_close(fused_logp, logp, rtol=0, atol=1e-6)
    # the entropy (about 2 here) from one softmax instead of two: at T 0.7 the unfused read is itself
    # 1.5e-6 from float64, the fused one 5.9e-7
    torch.testing.assert_close(fused_entropy, entropy, rtol=1e-6, atol=3e-6)
    # within 1e-6 of the gradient's scale: the head's matmul runs per chunk, the per-token weight
    # multiplies after it instead of before, and the entropy's gradient p (S - z) cancels
    torch.testing.assert_close(fused_grad, grad, rtol=1e-6, atol=1e-6 * grad.abs().max().item())
    assert torch.isfinite(grad).all() and grad.abs().max() > 0.1  # finite, and not trivially zero


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: f"T{s['temperature']}-k{s['top_k']}-p{s['top_p']}")
def test_exp_floor_changes_nothing_on_logits_spread_past_it(sampling, monkeypatch):
    """Logits spread over hundreds (past `EXP_FLOOR` and float32's denormal range after the shift):
    the read with the floor equals the read without it."""
    weight, h0, labels = _head_and_inputs(seed=4, scale=40.0)
    assert (h0 @ weight.T).aminmax().max - (h0 @ weight.T).aminmax().min > 200
    weights = torch.randn(2, *labels.shape, generator=torch.Generator().manual_seed(5))
    results = []
    for floor in (logprobs.EXP_FLOOR, -torch.inf):
        monkeypatch.setattr(logprobs, "EXP_FLOOR", floor)
        h = h0.clone().requires_grad_(True)
        logp, entropy = linear_logprobs(h, weight, labels, sampling["temperature"], top_k=sampling["top_k"],
                                        top_p=sampling["top_p"], with_entropy=True, entropy_grad=True)
        results.append((logp.detach(), entropy.detach(), _grad(h, logp, entropy, weights)))
    for floored, exact in zip(*results):
        torch.testing.assert_close(floored, exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("masked", [-torch.inf, -1e30])
def test_fused_read_with_masked_vocabulary_entries(masked):
    """A head bias of -inf (or a huge negative) on some entries, as a padded vocabulary's mask: those
    tokens have probability 0, and entropy and gradients stay finite and equal the reference's."""
    weight, h0, labels = _head_and_inputs(seed=6)
    bias = torch.zeros(weight.shape[0])
    bias[60:] = masked
    labels = labels % 60
    weights = torch.randn(2, *labels.shape, generator=torch.Generator().manual_seed(7))
    results = []
    for fused in (False, True):
        h = h0.clone().requires_grad_(True)
        if fused:
            logp, entropy = linear_logprobs(h, weight, labels, 0.8, bias=bias, with_entropy=True, entropy_grad=True)
        else:
            logits = h @ weight.T + bias
            logp, entropy = token_logprobs(logits, labels, 0.8), entropy_from_logits(logits, 0.8)
        results.append((logp.detach(), entropy.detach(), _grad(h, logp, entropy, weights)))
    for fused_value, value in zip(results[1], results[0]):
        assert torch.isfinite(fused_value).all()
        torch.testing.assert_close(fused_value, value, rtol=1e-5, atol=1e-5)


def test_fused_read_without_gradients_and_without_entropy():
    weight, h, labels = _head_and_inputs(seed=2)
    bias = torch.randn(weight.shape[0])
    with torch.no_grad():
        logp, entropy = linear_logprobs(h, weight, labels, 0.8, bias=bias, top_p=0.9)
    assert entropy is None and not logp.requires_grad
    torch.testing.assert_close(logp, token_logprobs(h @ weight.T + bias, labels, 0.8, top_p=0.9), rtol=0, atol=1e-6)


def test_reads_of_no_positions_are_empty():
    weight, _, _ = _head_and_inputs()
    h, labels = torch.randn(0, weight.shape[1], requires_grad=True), torch.zeros(0, dtype=torch.long)
    logp, entropy = linear_logprobs(h, weight, labels, 0.7, with_entropy=True, top_k=5)
    assert logp.shape == entropy.shape == (0,)
    logp.sum().backward()
    assert h.grad.shape == h.shape
    logits = torch.randn(0, weight.shape[0])
    assert token_logprobs(logits, labels).shape == entropy_from_logits(logits).shape == (0,)


def test_fused_read_refuses_a_trained_head():
    weight, h, labels = _head_and_inputs()
    with pytest.raises(ValueError, match="frozen head"):
        linear_logprobs(h, weight.requires_grad_(True), labels)


def test_fused_read_under_bf16_autocast_matches_autocast_linear():
    """Autocast runs the head in bf16 either way; the fused read differs only by where the gradient
    is rounded to bf16 (before or after the per-token scale): within bf16 rounding (2^-8 relative)."""
    weight, h0, labels = _head_and_inputs(seed=3, hidden=32, vocab=211)
    sampling = dict(temperature=0.7, top_k=-1, top_p=0.95)
    results = []
    for fused in (False, True):
        h = h0.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fused:
                logp, entropy = linear_logprobs(h, weight, labels, sampling["temperature"], top_p=sampling["top_p"],
                                                with_entropy=True, entropy_grad=True)
            else:
                logits = torch.nn.functional.linear(h, weight)
                assert logits.dtype == torch.bfloat16
                logp, entropy = _reference(h, weight, labels, sampling, True)
        loss = logp.sum() + 0.1 * entropy.sum()
        results.append((logp.detach(), entropy.detach(), torch.autograd.grad(loss, h)[0]))
    (logp, entropy, grad), (fused_logp, fused_entropy, fused_grad) = results
    torch.testing.assert_close(fused_logp, logp, rtol=0, atol=1e-5)  # the same bf16 logits
    torch.testing.assert_close(fused_entropy, entropy, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused_grad, grad, rtol=2e-2, atol=2e-2 * grad.abs().max().item())


def test_completion_forward_with_a_trained_head_reads_its_logits(tiny_model_dir):
    """Full fine-tuning (a head with a gradient) takes the unfused path; both agree."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = collate([[10, 11, 12], [20]], [[30, 31], [40, 41, 42]], pad_id=2)
    trained = completion_forward(model, batch, 0.7, with_entropy=True, top_k=30)
    model.requires_grad_(False)
    frozen = completion_forward(model, batch, 0.7, with_entropy=True, top_k=30)
    assert trained.logp.requires_grad and not frozen.logp.requires_grad
    torch.testing.assert_close(frozen.logp, trained.logp.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(frozen.entropy, trained.entropy.detach(), rtol=0, atol=1e-5)
