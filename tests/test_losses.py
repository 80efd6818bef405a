"""Losses (docs/algorithms.md §2-6, §9) against hand computations on small tensors."""

import math

import pytest
import torch

from pipeline.losses import (
    AGG_MODES,
    POLICY_LOSSES,
    aggregate,
    entropy_from_logits,
    get_policy_loss,
    gspo_sequence_ratio,
    kl_estimate,
    sapo_gate_weight,
    token_logprobs,
    truncate_logits,
    truncated_is_weights,
    value_loss,
)

NAN, INF = float("nan"), float("inf")
ln = math.log


def leaf(values):
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def full_mask(*shape):
    return torch.ones(*shape, dtype=torch.bool)


# ---------------------------------------------------------------- PPO clip, DAPO, dual clip (§3)

# token ratios and advantages, logp_old = 0 so r = exp(logp)
#   r=1.5 A=+1 above 1+eps: clipped (zero grad)   r=0.5 A=-1 below 1-eps: clipped (zero grad)
#   r=1.1 A=+2 inside                             r=0.5 A=+1 below, A>0: unclipped
#   r=1.5 A=-1 above, A<0: unclipped
RATIOS = [1.5, 0.5, 1.1, 0.5, 1.5]
ADVS = [1.0, -1.0, 2.0, 1.0, -1.0]


def test_ppo_clip_value_and_gradient_per_region():
    logp = leaf([[ln(r) for r in RATIOS]])
    loss, stats = get_policy_loss("ppo_clip")(logp, torch.zeros(1, 5), torch.tensor([ADVS]),
                                              full_mask(1, 5), "token-mean", eps=0.2)
    per_token = [-1.2 * 1, -0.8 * -1, -1.1 * 2, -0.5 * 1, -1.5 * -1]
    assert loss.item() == pytest.approx(sum(per_token) / 5, abs=1e-6)
    loss.backward()
    # inside or unclipped: d/dlogp (-A*r) = -A*r; clipped: 0; token-mean divides by 5
    expected = [0.0, 0.0, -2 * 1.1 / 5, -1 * 0.5 / 5, 1 * 1.5 / 5]
    torch.testing.assert_close(logp.grad, torch.tensor([expected]))
    assert stats["clip_frac_high"] == pytest.approx(0.2)
    assert stats["clip_frac_low"] == pytest.approx(0.2)
    assert stats["ratio_mean"] == pytest.approx(sum(RATIOS) / 5)


def test_dapo_asymmetric_bounds():
    # r=1.25, A>0: inside DAPO's 1+0.28, clipped by PPO's 1+0.2; r=0.79, A<0: clipped by both
    logp_values = [[ln(1.25), ln(0.79)]]
    adv, mask, old = torch.tensor([[1.0, -1.0]]), full_mask(1, 2), torch.zeros(1, 2)
    grads = {}
    for name, hyper in [("dapo", {}), ("ppo_clip", {}), ("ppo_clip", dict(eps_high=0.28))]:
        logp = leaf(logp_values)
        loss, stats = get_policy_loss(name)(logp, old, adv, mask, **hyper)
        loss.backward()
        grads[name, tuple(hyper)] = logp.grad
        assert stats["clip_frac_low"] == pytest.approx(0.5)
    torch.testing.assert_close(grads["dapo", ()], torch.tensor([[-1.25 / 2, 0.0]]))
    torch.testing.assert_close(grads["ppo_clip", ()], torch.zeros(1, 2))
    torch.testing.assert_close(grads["ppo_clip", ("eps_high",)], grads["dapo", ()])
    # an override of eps_high moves the upper bound below 1.25
    logp = leaf(logp_values)
    get_policy_loss("dapo")(logp, old, adv, mask, eps_high=0.1)[0].backward()
    torch.testing.assert_close(logp.grad, torch.zeros(1, 2))


def test_dual_clip_caps_negative_advantage_loss():
    logp = leaf([[ln(5.0), ln(2.0)]])
    adv = torch.tensor([-1.0])  # one advantage per sequence
    loss, stats = get_policy_loss("ppo_clip")(logp, torch.zeros(1, 2), adv, full_mask(1, 2),
                                              dual_clip_c=3.0)
    # r=5: -min(-5, -1.2) = 5, capped at -c*A = 3 (zero grad); r=2: loss 2 < 3, grad -A*r = 2
    assert loss.item() == pytest.approx((3.0 + 2.0) / 2)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0 / 2]]))
    assert stats["dual_clip_frac"] == pytest.approx(0.5)
    plain, _ = get_policy_loss("ppo_clip")(logp, torch.zeros(1, 2), adv, full_mask(1, 2))
    assert plain.item() == pytest.approx((5.0 + 2.0) / 2)


# ---------------------------------------------------------------- GSPO (§2, §3)


def test_gspo_sequence_ratio_is_geometric_mean():
    logp = torch.tensor([[ln(2.0), ln(0.4), NAN]])
    mask = torch.tensor([[True, True, False]])
    s = gspo_sequence_ratio(logp, torch.zeros(1, 3), mask)
    assert s.item() == pytest.approx(math.sqrt(0.8), abs=1e-6)
    assert s.item() == pytest.approx(0.894, abs=1e-3)


def test_gspo_token_matches_gspo_when_unclipped():
    torch.manual_seed(0)
    base = 0.1 * torch.randn(2, 4)
    old = 0.1 * torch.randn(2, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5])
    results = {}
    for name in ("gspo", "gspo_token"):
        logp = base.clone().requires_grad_()
        loss, _ = get_policy_loss(name)(logp, old, adv, mask, "seq-mean-token-mean",
                                        eps_low=0.5, eps_high=0.5)
        loss.backward()
        results[name] = loss, logp.grad
    s = gspo_sequence_ratio(base, old, mask)
    assert results["gspo"][0].item() == pytest.approx(-(s * adv).mean().item(), abs=1e-6)
    torch.testing.assert_close(results["gspo_token"][0], results["gspo"][0])
    torch.testing.assert_close(results["gspo_token"][1], results["gspo"][1])
    # d(-s_i*A_i/2)/dlogp_it = -A_i * s_i / (2 * |o_i|) on unmasked tokens
    lengths = mask.sum(-1, keepdim=True)
    expected = torch.where(mask, -(adv * s)[:, None] / (2 * lengths), 0.0)
    torch.testing.assert_close(results["gspo"][1], expected)


def test_gspo_default_clip_is_tiny():
    # s = sqrt(0.8) < 1 - 3e-4: clipped for A<0 (zero grad), not for A>0
    for adv, clipped in [(-1.0, True), (1.0, False)]:
        logp = leaf([[ln(2.0), ln(0.4)]])
        loss, stats = get_policy_loss("gspo")(logp, torch.zeros(1, 2), torch.tensor([adv]),
                                              full_mask(1, 2))
        loss.backward()
        assert (logp.grad.abs().sum().item() == 0) == clipped
        assert stats["clip_frac_low"] == (1.0 if clipped else 0.0)


# ---------------------------------------------------------------- SAPO (§3)


def test_sapo_gate_weight_is_sech_squared():
    r = torch.tensor([0.2, 0.9, 1.0, 1.3, 3.0])
    for tau in (1.0, 1.05, 4.0):
        expected = 1 / torch.cosh(tau * (r - 1) / 2) ** 2
        torch.testing.assert_close(sapo_gate_weight(r, torch.tensor(tau)), expected)
    assert sapo_gate_weight(torch.tensor(1.0), torch.tensor(1.05)).item() == 1.0


def test_sapo_gradient_is_gate_times_policy_gradient():
    ratios = torch.tensor([[0.7, 1.0, 1.6], [1.2, 0.5, 2.5]])
    adv = torch.tensor([1.5, -2.0])
    tau_pos, tau_neg = 1.0, 2.0  # distinct so using the wrong one shows
    logp = ratios.log().requires_grad_()
    loss, stats = get_policy_loss("sapo")(logp, torch.zeros(2, 3), adv, full_mask(2, 3),
                                          "token-mean", tau_pos=tau_pos, tau_neg=tau_neg)
    tau = torch.tensor([[tau_pos], [tau_neg]])
    f = torch.sigmoid(tau * (ratios - 1)) * 4 / tau
    assert loss.item() == pytest.approx(-(f * adv[:, None]).mean().item(), abs=1e-6)
    loss.backward()
    w = 1 / torch.cosh(tau * (ratios - 1) / 2) ** 2
    torch.testing.assert_close(logp.grad, -(w * ratios * adv[:, None]) / 6)
    assert stats["gate_mean"] == pytest.approx(w.mean().item(), abs=1e-6)


# ---------------------------------------------------------------- aggregation (§4)

LENGTHS_MASK = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)


def test_aggregation_modes_hand_values():
    # seq 1: [4, 6] (sum 10, mean 5); seq 2: six 1s (sum 6, mean 1); 8 tokens, sum 16
    loss = torch.tensor([[4.0, 6.0, NAN, INF, 1e9, NAN], [1.0] * 6])
    assert aggregate(loss, LENGTHS_MASK, "token-mean").item() == pytest.approx(16 / 8)
    assert aggregate(loss, LENGTHS_MASK, "seq-mean-token-mean").item() == pytest.approx((5 + 1) / 2)
    norm = aggregate(loss, LENGTHS_MASK, "seq-mean-token-sum-norm")
    assert norm.item() == pytest.approx(16 / (2 * 6))  # L_max defaults to the width T
    norm = aggregate(loss, LENGTHS_MASK, "seq-mean-token-sum-norm", max_len=8)
    assert norm.item() == pytest.approx(16 / (2 * 8))
    # a fully masked (filtered) sequence is not counted among the sequences
    empty = torch.tensor([[True, True, False, False, False, False], [False] * 6])
    assert aggregate(loss, empty, "seq-mean-token-mean").item() == pytest.approx(5.0)
    assert aggregate(loss, empty, "seq-mean-token-sum-norm").item() == pytest.approx(10 / 6)
    with pytest.raises(ValueError, match="token-sum"):
        aggregate(loss, LENGTHS_MASK, "token-sum")


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name", list(POLICY_LOSSES))
def test_gradient_accumulation_matches_full_batch(agg, name):
    torch.manual_seed(1)
    theta = (0.3 * torch.randn(2, 6)).requires_grad_()
    old, adv = 0.3 * torch.randn(2, 6), torch.tensor([1.0, -0.7])
    step = dict(num_tokens=8, num_seqs=2, max_len=8)
    fn = get_policy_loss(name)
    full, _ = fn(theta, old, adv, LENGTHS_MASK, agg, **step)
    (full_grad,) = torch.autograd.grad(full, theta)
    # micro-batch 1 is sequence 1 trimmed to its own width, micro-batch 2 is sequence 2
    micro = [fn(theta[:1, :2], old[:1, :2], adv[:1], LENGTHS_MASK[:1, :2], agg, **step)[0],
             fn(theta[1:], old[1:], adv[1:], LENGTHS_MASK[1:], agg, **step)[0]]
    for part in micro:
        part.backward()
    torch.testing.assert_close(sum(micro), full)
    torch.testing.assert_close(theta.grad, full_grad)
    if agg != "seq-mean-token-sum-norm":  # step normalisers equal this batch's own counts
        default, _ = fn(theta, old, adv, LENGTHS_MASK, agg)
        torch.testing.assert_close(default, full)


# ---------------------------------------------------------------- masked garbage


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("name", list(POLICY_LOSSES))
def test_masked_garbage_changes_nothing(agg, name):
    torch.manual_seed(2)
    clean = {k: 0.2 * torch.randn(2, 6) for k in ("logp", "logp_old", "logp_ref", "logp_engine")}
    clean["advantages"] = torch.randn(2, 6)
    clean["entropy"], clean["tis_weights"] = torch.rand(2, 6), torch.rand(2, 6) + 0.5
    results = []
    for garbage in (None, NAN, INF, -1e30):
        inputs = {k: v.clone() if garbage is None else v.masked_fill(~LENGTHS_MASK, garbage)
                  for k, v in clean.items()}
        inputs["logp"].requires_grad_()
        loss, stats = get_policy_loss(name)(mask=LENGTHS_MASK, agg=agg, kl_coef=0.1,
                                            entropy_coef=0.01, dual_clip_c=3.0, **inputs)
        loss.backward()
        results.append((loss, inputs["logp"].grad, stats))
    assert torch.isfinite(results[0][0]) and torch.isfinite(results[0][1]).all()
    for loss, grad, stats in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][1])
        assert stats == pytest.approx(results[0][2])
    assert {"pg_loss", "ratio_mean", "kl", "entropy", "mismatch_abs", "mismatch_kl"} <= set(stats)


def test_unknown_names_are_rejected():
    args = (torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), full_mask(1, 2))
    with pytest.raises(TypeError, match="epsilon"):
        get_policy_loss("ppo_clip")(*args, epsilon=0.1)
    with pytest.raises(ValueError, match="ppo"):
        get_policy_loss("ppo")
    with pytest.raises(ValueError, match="mean"):
        get_policy_loss("sapo")(*args, agg="mean")


# ---------------------------------------------------------------- KL (§5)


def test_kl_estimators_hand_values():
    logp, logp_ref = torch.tensor([[ln(0.5)]]), torch.tensor([[ln(0.25)]])
    d = ln(0.5)  # logp_ref - logp
    assert kl_estimate(logp, logp_ref, "k1").item() == pytest.approx(-d)
    assert kl_estimate(logp, logp_ref, "k2").item() == pytest.approx(0.5 * d**2)
    assert kl_estimate(logp, logp_ref, "k3").item() == pytest.approx(0.5 - d - 1)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, logp_ref, "k4")


def test_k3_is_nonnegative_clamped_and_masked():
    d = torch.linspace(-30, 30, 101).requires_grad_()
    k3 = kl_estimate(torch.zeros(101), d, "k3")
    assert (k3 >= 0).all() and k3.max().item() == 10.0
    k3.sum().backward()
    assert torch.isfinite(d.grad).all()
    mask = torch.tensor([[True, False]])
    out = kl_estimate(torch.tensor([[0.0, NAN]]), torch.tensor([[ln(0.5), INF]]), "k3", mask)
    torch.testing.assert_close(out, torch.tensor([[0.5 + ln(2) - 1, 0.0]]))


def test_k3_mean_estimates_kl_on_sampled_tokens():
    gen = torch.Generator().manual_seed(0)
    logp_pi = torch.log_softmax(torch.tensor([1.0, 0.0, -1.0, 0.5]), -1)
    logp_ref = torch.log_softmax(torch.tensor([0.0, 0.5, 0.0, -0.5]), -1)
    exact = (logp_pi.exp() * (logp_pi - logp_ref)).sum().item()
    tokens = torch.multinomial(logp_pi.exp(), 200_000, replacement=True, generator=gen)
    for kind in ("k1", "k3"):
        est = kl_estimate(logp_pi[tokens], logp_ref[tokens], kind).mean().item()
        assert est == pytest.approx(exact, abs=1e-2)


def test_kl_and_entropy_terms_in_the_loss():
    mask, zeros = full_mask(1, 2), torch.zeros(1, 2)
    logp_ref, entropy = torch.tensor([[ln(0.5), 0.0]]), torch.tensor([[1.0, 3.0]])
    loss, stats = get_policy_loss("ppo_clip")(zeros, zeros, torch.zeros(1), mask,
                                              logp_ref=logp_ref, kl_coef=0.1, entropy=entropy,
                                              entropy_coef=0.01)
    k3 = (0.5 + ln(2) - 1) / 2
    assert loss.item() == pytest.approx(0.1 * k3 - 0.01 * 2.0, abs=1e-6)
    assert stats["kl"] == pytest.approx(k3) and stats["entropy"] == pytest.approx(2.0)


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


# ---------------------------------------------------------------- TIS (§9)


def test_tis_token_truncate():
    logp_old = torch.tensor([[ln(3.0), ln(0.5), NAN]])
    mask = torch.tensor([[True, True, False]])
    w, stats = truncated_is_weights(logp_old, torch.zeros(1, 3), mask, "token_truncate", 2.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 0.0]]))
    assert stats["tis_truncated_frac"] == pytest.approx(0.5)
    assert stats["tis_weight_mean"] == pytest.approx(1.25)


def test_tis_sequence_mask():
    # seq 1 token ratios 4 and 2: geometric mean sqrt(8) = 2.83 > C = 2, masked;
    # seq 2 ratios 3 and 1/3: geometric mean 1, kept although one token ratio exceeds C
    logp_old = torch.tensor([[ln(4.0), ln(2.0)], [ln(3.0), -ln(3.0)]])
    w, stats = truncated_is_weights(logp_old, torch.zeros(2, 2), full_mask(2, 2),
                                    "sequence_mask", 2.0)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert stats["tis_masked_frac"] == pytest.approx(0.5)
    none, _ = truncated_is_weights(logp_old, torch.zeros(2, 2), full_mask(2, 2), "none", 2.0)
    torch.testing.assert_close(none, torch.ones(2, 2))


def test_tis_weights_multiply_token_losses():
    logp = leaf([[0.0, 0.0]])
    loss, _ = get_policy_loss("ppo_clip")(logp, torch.zeros(1, 2), torch.tensor([1.0]),
                                          full_mask(1, 2), tis_weights=torch.tensor([[2.0, 0.5]]))
    assert loss.item() == pytest.approx(-(2.0 + 0.5) / 2)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.0, -0.25]]))


# ---------------------------------------------------------------- value loss (PPO)


def test_value_loss_clipped_and_unclipped_branches():
    values = leaf([[1.0, 1.5, 0.5]])
    old, returns = torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    loss, stats = value_loss(values, old, returns, full_mask(1, 3), clip=0.2)
    # token 1: no move, 0.5*1 = 0.5; token 2: unclipped .25 > clipped (1.2-1)^2 = .04 -> .125;
    # token 3: clipped V=0.8 gives .64 > unclipped .25 -> .32 with zero gradient
    assert loss.item() == pytest.approx((0.5 + 0.125 + 0.32) / 3)
    assert stats["vf_clip_frac"] == pytest.approx(1 / 3)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[-1.0 / 3, 0.5 / 3, 0.0]]))
