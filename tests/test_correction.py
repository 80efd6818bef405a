"""The rollout correction (pipeline/algorithms/correction.py, docs/algorithms.md §9) against hand
computations: every variant's weights and stats, the mismatch measures. The learner-level check
(identical weights on both sides give weight 1 for every variant) is in test_learner.py."""

import pytest
import torch

from pipeline.algorithms.correction import (
    CORRECTIONS,
    NoCorrectionSettings,
    SequenceMaskSettings,
    SequenceTruncateSettings,
    TokenMaskSettings,
    TokenTruncateSettings,
    correction_weights,
    mismatch_stats,
)
from hand_tensors import INF, NAN, ln


def _ratios(rows):
    """logp_old (the log of each ratio, NaN where None) and its mask, the engine's log-probs being 0."""
    width = max(len(r) for r in rows)
    logp = torch.tensor([[ln(x) if x is not None else NAN for x in r] + [NAN] * (width - len(r)) for r in rows])
    return logp, ~torch.isnan(logp)


def _engine(logp):
    """The engine's log-probs: 0 on every token, garbage (inf) on padding."""
    return torch.where(torch.isnan(logp), INF, 0.0)


def test_none_is_one_on_every_token():
    logp, mask = _ratios([[3.0, 0.1], [7.0, None]])
    w, stats = correction_weights(NoCorrectionSettings(), logp, _engine(logp), mask)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert stats == {"train/tis_weight_mean": 1.0}


def test_token_truncate():
    # ratios 3 and 0.5 with C = 2: weights 2 and 0.5; one of two tokens truncated
    logp, mask = _ratios([[3.0, 0.5, None]])
    w, stats = correction_weights(TokenTruncateSettings(cap=2.0), logp, _engine(logp), mask)
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.5, 0.0]]))
    assert stats["train/tis_truncated_frac"] == pytest.approx(0.5)
    assert stats["train/tis_weight_mean"] == pytest.approx(1.25)


def test_sequence_truncate_weighs_each_row_by_its_truncated_product():
    # row 0: 1.5 * 1.2 = 1.8 (kept); row 1: 4 * 1.5 * 0.5 = 3 -> C = 2 (its geometric mean 1.44 is
    # inside [1/2, 2]: the product, not the mean, is the importance weight); row 2: 0.5 * 0.5 = 0.25;
    # row 3 has no tokens and counts in neither statistic
    logp, mask = _ratios([[1.5, 1.2], [4.0, 1.5, 0.5], [0.5, 0.5], [None]])
    w, stats = correction_weights(SequenceTruncateSettings(cap=2.0), logp, _engine(logp), mask)
    torch.testing.assert_close(w, torch.tensor([[1.8, 1.8, 0.0], [2.0, 2.0, 2.0], [0.25, 0.25, 0.0],
                                                [0.0, 0.0, 0.0]]))
    assert stats["train/tis_truncated_frac"] == pytest.approx(1 / 3)
    assert stats["train/tis_weight_mean"] == pytest.approx((1.8 * 2 + 2.0 * 3 + 0.25 * 2) / 7)


def test_sequence_truncate_never_overflows():
    # log-ratio 50 on each of 8 tokens: the product e^400 is inf in float32, the weight is C
    logp, engine, mask = torch.full((2, 8), 50.0), torch.full((2, 8), -50.0), torch.ones(2, 8, dtype=torch.bool)
    w, stats = correction_weights(SequenceTruncateSettings(cap=3.0), logp, engine, mask)
    torch.testing.assert_close(w, torch.full((2, 8), 3.0))
    assert stats["train/tis_truncated_frac"] == 1.0
    tiny, _ = correction_weights(SequenceTruncateSettings(), -logp, -engine, mask)
    assert torch.isfinite(tiny).all() and tiny.max() < 1e-30


def test_token_mask_keeps_the_ratio_inside_the_band():
    # IcePop: ratios 0.4, 0.8, 3, 6 with [0.5, 5]: 0.4 and 6 masked, the others weighted by their ratio
    logp, mask = _ratios([[0.4, 0.8, 3.0, 6.0, None]])
    w, stats = correction_weights(TokenMaskSettings(), logp, _engine(logp), mask)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.8, 3.0, 0.0, 0.0]]))
    assert stats["train/tis_masked_frac"] == pytest.approx(0.5)
    assert stats["train/tis_weight_mean"] == pytest.approx(3.8 / 4)
    # a narrower band [0.7, 2]: only 0.8 stays
    w, stats = correction_weights(TokenMaskSettings(lower=0.7, upper=2.0), logp, _engine(logp), mask)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.8, 0.0, 0.0, 0.0]]))
    assert stats["train/tis_masked_frac"] == pytest.approx(0.75)


def test_sequence_mask_on_the_geometric_mean():
    # [0.5, 2]: row 0 ratios 4, 2: geometric mean sqrt(8) = 2.83, masked; row 1 ratios 3, 1/3: mean 1,
    # kept although one token ratio leaves the band; row 2 ratios 0.25, 0.5: 0.35, masked (low side);
    # row 3 one token of ratio 2.5: its mean over its own token is 2.5, masked
    logp, mask = _ratios([[4.0, 2.0], [3.0, 1 / 3], [0.25, 0.5], [2.5, None]])
    w, stats = correction_weights(SequenceMaskSettings(), logp, _engine(logp), mask)
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))
    assert stats["train/tis_masked_frac"] == pytest.approx(0.75)
    # [0.3, 3]: rows 0, 1, 3 kept, row 2 still below
    w, stats = correction_weights(SequenceMaskSettings(lower=0.3, upper=3.0), logp, _engine(logp), mask)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]))
    assert stats["train/tis_masked_frac"] == pytest.approx(0.0)


@pytest.mark.parametrize("name", list(CORRECTIONS))
def test_identical_log_probs_give_weight_one_and_no_gradient(name):
    logp = (-torch.rand(3, 5)).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    w, stats = correction_weights(CORRECTIONS[name].settings(), logp, logp.detach(), mask)
    assert not w.requires_grad
    torch.testing.assert_close(w, mask.float())
    assert stats["train/tis_weight_mean"] == 1.0
    assert stats.get("train/tis_truncated_frac", 0.0) == 0.0 and stats.get("train/tis_masked_frac", 0.0) == 0.0


def test_mismatch_stats_hand_values():
    # learner logp_old [ln 2, 0, garbage], engine [0, 0, garbage]: |diff| mean ln2/2;
    # k3 KL(engine || learner) per token: d = ln 2 -> 2 - ln 2 - 1, then 0
    mask = torch.tensor([[True, True, False]])
    stats = mismatch_stats(torch.tensor([[ln(2.0), 0.0, NAN]]), torch.tensor([[0.0, 0.0, INF]]), mask)
    assert stats["mismatch/mean_abs"] == pytest.approx(ln(2.0) / 2)
    assert stats["mismatch/kl"] == pytest.approx((1 - ln(2.0)) / 2)
