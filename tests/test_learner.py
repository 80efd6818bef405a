"""The learner on the tiny model: updates move log-probs the way the advantages say."""

import dataclasses
import math

import pytest
import torch

import pipeline.learner.learner
from pipeline.algorithms.advantages import Advantages
from pipeline.algorithms.correction import TokenTruncateSettings, correction_weights
from pipeline.learner.batch import RolloutBatch
from pipeline.config import load_config
from pipeline.core.forward import collate, completion_forward
from pipeline.core.models import load_tokenizer
from pipeline.learner.learner import Learner
from pipeline.rollout import HFEngine, SamplingSettings


def _config(*overrides):
    base = ["rl.prompts_per_step=2", "rl.group_size=2", "rl.mini_batch_size=4", "rl.micro_batch_size=2",
            "rl.lr=5e-3", "rl.bf16_autocast=false", "rollout.max_tokens=8"]
    return load_config(None, base + list(overrides))


def _batch(learner, prompts, completions):
    """The rollout batch of an engine in perfect sync with the learner, and the learner's scores."""
    seqs = collate(prompts, completions, pad_id=2)
    with torch.no_grad():
        logp_engine = learner._forward(seqs)[0].logp.float()
    batch = RolloutBatch(seqs=seqs, loss_mask=seqs.completion_mask.clone(), logp_engine=logp_engine,
                         rewards=torch.zeros(len(completions)), group_size=learner.rl.group_size)
    return batch, learner.score(batch)


def _advantages(values):
    return Advantages(torch.tensor(values))


PROMPTS = [[10, 11, 12], [10, 11, 12], [20, 21], [20, 21]]
COMPLETIONS = [[30, 31, 32], [40, 41], [50], [60, 61, 62, 63]]


def _logp(learner, batch):
    with torch.no_grad():
        return learner._forward(batch.seqs)[0].logp


@pytest.mark.parametrize("preset", ["grpo", "dapo", "gspo", "sapo", "dr_grpo", "rloo"])
def test_update_follows_the_advantage_sign(tiny_model_dir, preset):
    torch.manual_seed(0)
    learner = Learner(_config(f"algorithm.preset={preset}"), str(tiny_model_dir), torch.device("cpu"), 10)
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    before = _logp(learner, batch)
    stats = learner.update(batch, scores, _advantages([1.0, -1.0, 1.0, -1.0]), torch.Generator().manual_seed(0))
    after = _logp(learner, batch)
    mask = batch.loss_mask
    gain = ((after - before) * mask).sum(-1) / mask.sum(-1)
    assert gain[0] > 0 and gain[2] > 0, gain
    assert gain[1] < 0 and gain[3] < 0, gain
    assert stats["train/grad_norm"] > 0 and torch.isfinite(torch.tensor(stats["train/loss"]))
    if preset != "sapo":
        assert stats["clip_frac/low"] == 0 and stats["clip_frac/high"] == 0  # on-policy: ratio 1
    else:
        assert stats["sapo/gate_mean"] == pytest.approx(1.0)  # on-policy: ratio 1, gate weight 1
    assert stats["mismatch/mean_abs"] < 1e-5


def test_on_policy_step_skips_the_logp_old_pass(tiny_model_dir):
    learner = Learner(_config(), str(tiny_model_dir), torch.device("cpu"), 10)
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    assert learner.on_policy(len(batch)) and scores.logp_old is None
    off = Learner(_config("rl.ppo_epochs=2"), str(tiny_model_dir), torch.device("cpu"), 10)
    batch, scores = _batch(off, PROMPTS, COMPLETIONS)
    assert scores.logp_old is not None and scores.logp_old.shape == batch.loss_mask.shape
    mask = batch.loss_mask
    torch.testing.assert_close(scores.logp_old * mask, _logp(off, batch) * mask)


def test_kl_reference_is_the_model_without_adapter(tiny_model_dir):
    learner = Learner(_config("algorithm.preset=grpo", "algorithm.kl_coef=0.1"), str(tiny_model_dir),
                      torch.device("cpu"), 10)
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    # A fresh LoRA adapter (B = 0) leaves the model unchanged: reference == policy.
    torch.testing.assert_close(scores.logp_ref * batch.loss_mask, _logp(learner, batch) * batch.loss_mask)
    learner.update(batch, scores, _advantages([1.0, -1.0, 1.0, -1.0]), torch.Generator().manual_seed(0))
    scores = learner.score(batch)
    assert not torch.allclose(scores.logp_ref * batch.loss_mask, _logp(learner, batch) * batch.loss_mask)


def test_kl_reference_is_the_sft_adapter_rl_starts_from(tiny_model_dir, tiny_policy_factory, tmp_path):
    tiny_policy_factory(scale=0.5).save_pretrained(tmp_path / "sft")
    learner = Learner(_config("algorithm.kl_coef=0.1", f"model.adapter={tmp_path / 'sft'}"), str(tiny_model_dir),
                      torch.device("cpu"), 10)
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    mask = batch.loss_mask
    torch.testing.assert_close(scores.logp_ref * mask, _logp(learner, batch) * mask, rtol=0, atol=1e-5)
    with learner.model.disable_adapter():  # the base model: not what RL started from
        assert not torch.allclose(scores.logp_ref * mask, _logp(learner, batch) * mask, atol=1e-3)


def test_ppo_trains_a_value_head(tiny_model_dir):
    learner = Learner(_config("algorithm.preset=ppo"), str(tiny_model_dir), torch.device("cpu"), 10)
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    assert scores.values is not None and scores.logp_ref is not None and scores.logp_old is not None
    ones = torch.ones_like(batch.loss_mask, dtype=torch.float32)
    stats = learner.update(batch, scores, Advantages(ones, returns=ones), torch.Generator().manual_seed(0))
    assert stats["train/vf_loss"] > 0
    assert learner.value_head.bias.item() > 0  # moved toward the returns of 1


def test_filtered_rows_do_not_move(tiny_model_dir):
    torch.manual_seed(0)
    learner = Learner(_config("algorithm.preset=dapo", "lora.target_modules=[q_proj]"), str(tiny_model_dir),
                      torch.device("cpu"), 10)
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    batch = dataclasses.replace(batch, loss_mask=torch.zeros_like(batch.loss_mask))
    before = [p.detach().clone() for p in learner.params]
    learner.update(batch, scores, _advantages([1.0, -1.0, 1.0, -1.0]), torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, learner.params))


def _trained_params(model_dir, *overrides, advantages):
    torch.manual_seed(0)
    learner = Learner(_config("algorithm.preset=grpo", *overrides), str(model_dir), torch.device("cpu"), 10)
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    stats = learner.update(batch, scores, _advantages(advantages), torch.Generator().manual_seed(0))
    return [p.detach().clone() for p in learner.params], stats


@pytest.mark.parametrize("advantages", [[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], ids=["half", "none"])
def test_skipping_zero_advantage_rows_leaves_the_update_unchanged(tiny_model_dir, advantages):
    skipped, stats = _trained_params(tiny_model_dir, "algorithm.kl_coef=0", advantages=advantages)
    computed, full = _trained_params(tiny_model_dir, "algorithm.kl_coef=0", "rl.skip_zero_advantage=false",
                                     advantages=advantages)
    assert stats["train/learned_frac"] == sum(a != 0 for a in advantages) / 4 and full["train/learned_frac"] == 1.0
    for a, b in zip(skipped, computed):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # a KL term depends on every row: nothing is skipped
    _, with_kl = _trained_params(tiny_model_dir, "algorithm.kl_coef=0.1", advantages=advantages)
    assert with_kl["train/learned_frac"] == 1.0
    # so does an entropy bonus
    _, with_entropy = _trained_params(tiny_model_dir, "algorithm.kl_coef=0", "algorithm.entropy_coef=0.01",
                                      advantages=advantages)
    assert with_entropy["train/learned_frac"] == 1.0


@pytest.mark.parametrize("sampling", [
    ["rollout.top_p=0.5"],
    ["rollout.top_k=50"],
    ["rollout.top_k=50", "rollout.top_p=0.9", "rollout.temperature=0.7"],
], ids=["top_p", "top_k", "both"])
def test_learner_logprobs_are_the_engines_under_truncated_sampling(tiny_model_dir, sampling):
    # Issue 14: with top_p=0.5 (top_k=50) and identical weights the TIS weight was 0.5 (0.0017):
    # the engine renormalises over the kept set, the learner read the whole vocabulary.
    config = _config("rl.ppo_epochs=2", *sampling)  # two epochs: score() computes logp_old
    learner = Learner(config, str(tiny_model_dir), torch.device("cpu"), 10)
    torch.manual_seed(0)
    batch = _engine_batch(learner, config, tiny_model_dir)
    scores = learner.score(batch)
    mask, logp_engine = batch.loss_mask, batch.logp_engine
    torch.testing.assert_close(scores.logp_old[mask], logp_engine[mask], atol=1e-4, rtol=0)
    _, stats = correction_weights(TokenTruncateSettings(), scores.logp_old, logp_engine, mask)
    assert stats["train/tis_weight_mean"] == pytest.approx(1.0, abs=1e-4) and stats["train/tis_truncated_frac"] == 0
    update = learner.update(batch, scores, _advantages([1.0, -1.0, 1.0, -1.0]), torch.Generator().manual_seed(0))
    assert update["mismatch/mean_abs"] < 1e-4 and update["train/tis_weight_mean"] == pytest.approx(1.0, abs=1e-4)


def _engine_batch(learner, config, tiny_model_dir):
    """Two groups of two completions sampled by an HF engine on the learner's own model, with the
    engine's log-probs: both sides hold identical weights."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    groups = HFEngine(learner.model, tokenizer).generate(PROMPTS[::2], SamplingSettings.from_config(config.rollout, n=2))
    samples = [c for group in groups for c in group]
    seqs = collate([c.prompt_ids for c in samples], [c.token_ids for c in samples], tokenizer.pad_token_id)
    logp_engine = torch.zeros(seqs.completion_mask.shape)
    for i, c in enumerate(samples):
        logp_engine[i, : len(c.logprobs)] = torch.tensor(c.logprobs)
    return RolloutBatch(seqs=seqs, loss_mask=seqs.completion_mask.clone(), logp_engine=logp_engine,
                        rewards=torch.zeros(len(samples), dtype=torch.float64),
                        valid=torch.ones(len(samples), dtype=torch.bool), group_size=2)


@pytest.mark.parametrize("correction", ["none", "token_truncate", "sequence_truncate", "token_mask", "sequence_mask"])
def test_every_correction_is_one_with_identical_weights(tiny_model_dir, correction):
    # §9: the engine samples with the learner's own weights, so every ratio is 1: weight 1 on every
    # token, nothing truncated or masked, whichever correction the config selects (two epochs:
    # score() computes logp_old)
    config = _config(f"algorithm.correction.type={correction}", "rl.ppo_epochs=2")
    learner = Learner(config, str(tiny_model_dir), torch.device("cpu"), 10)
    torch.manual_seed(0)
    batch = _engine_batch(learner, config, tiny_model_dir)
    stats = learner.update(batch, learner.score(batch), _advantages([1.0, -1.0, 1.0, -1.0]),
                           torch.Generator().manual_seed(0))
    assert stats["mismatch/mean_abs"] < 1e-4
    assert stats["train/tis_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    own = {"token_truncate": "train/tis_truncated_frac", "sequence_truncate": "train/tis_truncated_frac",
           "token_mask": "train/tis_masked_frac", "sequence_mask": "train/tis_masked_frac"}
    if correction in own:
        assert stats[own[correction]] == 0.0


def test_the_learner_applies_the_configured_correction(tiny_model_dir):
    # an engine whose log-probs are ln 6 below the learner's: every token ratio is 6, outside
    # token_mask's [0.5, 5] (all masked, weight 0), truncated to C = 3 by token_truncate
    weights = {}
    for correction, key, frac in [("token_mask", "train/tis_masked_frac", 1.0),
                                  ("token_truncate", "train/tis_truncated_frac", 1.0)]:
        config = _config(f"algorithm.correction.type={correction}",
                         *(["algorithm.correction.cap=3"] if correction == "token_truncate" else []))
        learner = Learner(config, str(tiny_model_dir), torch.device("cpu"), 10)
        batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
        batch = dataclasses.replace(batch, logp_engine=batch.logp_engine - math.log(6.0))
        stats = learner.update(batch, scores, _advantages([1.0, -1.0, 1.0, -1.0]), torch.Generator().manual_seed(0))
        assert stats[key] == frac
        weights[correction] = stats["train/tis_weight_mean"]
    assert weights == {"token_mask": 0.0, "token_truncate": pytest.approx(3.0)}


@pytest.mark.vllm
@pytest.mark.parametrize("top_k, top_p", [(-1, 0.5), (50, 1.0)], ids=["top_p", "top_k"])
def test_learner_logprobs_are_vllms_under_truncated_sampling(vllm_merged_engine, tiny_model_dir, top_k, top_p):
    # vLLM serves the base tiny model in float32 with logprobs_mode="processed_logprobs".
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    vllm_merged_engine.update_weights(base)
    settings = SamplingSettings(n=2, temperature=1.0, top_k=top_k, top_p=top_p, max_tokens=6)
    samples = [c for group in vllm_merged_engine.generate(PROMPTS[::2], settings) for c in group]
    seqs = collate([c.prompt_ids for c in samples], [c.token_ids for c in samples], pad_id=2)
    with torch.no_grad():
        logp = completion_forward(base, seqs, 1.0, top_k=top_k, top_p=top_p).logp
    for i, c in enumerate(samples):
        torch.testing.assert_close(logp[i, : len(c.logprobs)], torch.tensor(c.logprobs), atol=2e-3, rtol=0)


def _first_gradient(model_dir, monkeypatch, entropy_coef):
    """The gradient of the first optimiser step (captured where the learner clips and steps)."""
    grads = []

    def capture(params, optimizer, scheduler, max_norm):
        grads.append(torch.cat([p.grad.flatten() for p in params]))
        optimizer.zero_grad()
        return 0.0

    monkeypatch.setattr(pipeline.learner.learner, "clip_and_step", capture)
    torch.manual_seed(0)
    learner = Learner(_config("algorithm.preset=dapo", f"algorithm.entropy_coef={entropy_coef}"), str(model_dir),
                      torch.device("cpu"), 10)
    with torch.no_grad():  # a non-zero adapter, so the gradient reaches every LoRA matrix
        for name, param in learner.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.full_like(param, 0.01))
    batch, scores = _batch(learner, PROMPTS, COMPLETIONS)
    stats = learner.update(batch, scores, _advantages([1.0, -1.0, 1.0, -1.0]), torch.Generator().manual_seed(0))
    (grad,) = grads
    return grad, stats


@pytest.mark.slow
def test_entropy_bonus_changes_the_update(tiny_model_dir, monkeypatch):
    # loss = pg - c * H: the gradient moves by -c * dH/dtheta, linearly in c (it had no gradient before)
    # (the random tiny model is near-uniform over its vocabulary: dH/dtheta is small, so c is large)
    plain, stats = _first_gradient(tiny_model_dir, monkeypatch, 0.0)
    small, small_stats = _first_gradient(tiny_model_dir, monkeypatch, 1.0)
    large, large_stats = _first_gradient(tiny_model_dir, monkeypatch, 2.0)
    assert (small - plain).abs().max() > 1e-5  # a detached entropy term would leave it exactly equal
    shift = small - plain
    torch.testing.assert_close(large - plain, 2 * shift, rtol=1e-2, atol=1e-2 * shift.abs().max().item())
    assert stats["entropy/mean"] == pytest.approx(large_stats["entropy/mean"])  # the same forward
    drop = stats["train/loss"] - small_stats["train/loss"]  # the bonus lowers the loss, linearly in c
    assert drop > 0 and stats["train/loss"] - large_stats["train/loss"] == pytest.approx(2 * drop, rel=1e-4)
