"""Log-probs and entropies of the sampling distribution (pipeline/core/logprobs.py, docs/algorithms.md
§6, §9) against hand computations and the transformers warpers."""

import pytest
import torch

from hand_tensors import INF, leaf, ln
from pipeline.core.logprobs import entropy_from_logits, token_logprobs, truncate_logits


# ---------------------------------------------------------------- entropy, log-probs (§6)


def test_entropy_of_three_way_distribution():
    logits = torch.tensor([[0.5, 0.25, 0.25]]).log() + 7.0  # shift-invariant
    h = entropy_from_logits(logits)
    assert h.item() == pytest.approx(0.5 * ln(2) + 2 * 0.25 * ln(4), abs=1e-6)  # 1.5 ln 2


def test_chunked_entropy_and_logprobs_match_reference():
    torch.manual_seed(3)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5))
    ref_logp = torch.log_softmax(logits / 0.7, -1).gather(-1, labels[..., None]).squeeze(-1)
    ref_h = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    logp = token_logprobs(logits, labels, temperature=0.7, chunk_rows=3)
    h = entropy_from_logits(logits, chunk_rows=3)
    torch.testing.assert_close(logp, ref_logp)
    torch.testing.assert_close(h, ref_h)
    grads = torch.autograd.grad((logp.sum() + h.sum()), logits)
    ref_grads = torch.autograd.grad((ref_logp.sum() + ref_h.sum()), logits)
    torch.testing.assert_close(grads, ref_grads)


# ---------------------------------------------------------------- the sampling distribution (§9)

PROBS = torch.tensor([[0.4, 0.3, 0.2, 0.1]])


@pytest.mark.parametrize("top_k, top_p, label, kept", [
    (-1, 0.5, 1, [0.4, 0.3]),  # ascending cumsum .1 .3 .6 1: drop while <= 0.5
    (-1, 0.8, 2, [0.4, 0.3, 0.2]),
    (1, 1.0, 0, [0.4]),
    (3, 1.0, 2, [0.4, 0.3, 0.2]),
    (3, 0.5, 1, [0.4, 0.3]),  # top-k first, then top-p on the renormalised top-k set (.2/.9 ...)
    (2, 0.2, 0, [0.4]),  # top-p keeps at least the most likely token
    (0, 1.0, 3, [0.4, 0.3, 0.2, 0.1]),
    (10, 1.0, 3, [0.4, 0.3, 0.2, 0.1]),  # k above the vocabulary: everything
])
def test_truncated_logprob_is_renormalised_over_the_kept_set(top_k, top_p, label, kept):
    logits = PROBS.log() + 3.0
    logp = token_logprobs(logits, torch.tensor([label]), top_k=top_k, top_p=top_p)
    assert logp.item() == pytest.approx(ln(PROBS[0, label].item() / sum(kept)), abs=1e-6)
    h = entropy_from_logits(logits, top_k=top_k, top_p=top_p)
    q = [p / sum(kept) for p in kept]
    assert h.item() == pytest.approx(-sum(x * ln(x) for x in q), abs=1e-6)


def test_top_k_keeps_ties_and_temperature_comes_first():
    logits = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    z = truncate_logits(logits, top_k=2)
    assert torch.isneginf(z).tolist() == [[False, False, False, True]]
    # temperature 0.5 sharpens [.4 .3 .2 .1] to [16 9 4 1]/30: top_p=0.5 then keeps only token 0
    logp = token_logprobs(PROBS.log(), torch.tensor([0]), temperature=0.5, top_p=0.5)
    assert logp.item() == pytest.approx(0.0, abs=1e-6)


def test_truncation_matches_the_transformers_warpers():
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(64, 500) * 3
    for temperature, top_k, top_p in [(1.0, 50, 1.0), (1.0, -1, 0.5), (0.7, 50, 0.9), (1.3, 5, 0.3)]:
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1:
            warpers.append(TopPLogitsWarper(top_p))
        reference = warpers(None, logits.clone()).log_softmax(-1)
        labels = reference.argmax(-1) if top_k == 5 else torch.multinomial(reference.exp(), 1).squeeze(-1)
        logp = token_logprobs(logits, labels, temperature, chunk_rows=16, top_k=top_k, top_p=top_p)
        torch.testing.assert_close(logp, reference.gather(-1, labels[:, None]).squeeze(-1))
        assert torch.equal(torch.isneginf(truncate_logits(logits / temperature, top_k, top_p)),
                           torch.isneginf(reference))


def test_a_token_outside_the_kept_set_keeps_a_finite_logprob_and_gradient():
    # After an update the sampled token can fall outside the new policy's top-p set: it is kept.
    logits = leaf((PROBS.log() + 1.0).tolist())
    logp = token_logprobs(logits, torch.tensor([3]), top_p=0.5)  # kept: {0.4, 0.3} + the label 0.1
    assert logp.item() == pytest.approx(ln(0.1 / 0.8), abs=1e-6)
    (grad,) = torch.autograd.grad(logp.sum(), logits)
    torch.testing.assert_close(grad, torch.tensor([[-0.5, -0.375, 0.0, 1 - 0.125]]))


def test_truncated_logprob_gradients_match_a_masked_log_softmax():
    torch.manual_seed(1)
    logits = torch.randn(6, 40, requires_grad=True)
    labels = torch.randint(0, 40, (6,))
    logp = token_logprobs(logits, labels, 0.8, chunk_rows=4, top_k=20, top_p=0.8)
    removed = torch.isneginf(truncate_logits(logits.detach() / 0.8, 20, 0.8, keep=labels))
    reference = (logits / 0.8).masked_fill(removed, -INF).log_softmax(-1).gather(-1, labels[:, None]).squeeze(-1)
    torch.testing.assert_close(logp, reference)
    grads = torch.autograd.grad(logp.sum(), logits)[0]
    torch.testing.assert_close(grads, torch.autograd.grad(reference.sum(), logits)[0])
    assert torch.isfinite(grads).all()
