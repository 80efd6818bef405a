"""The learner on the tiny model: updates move log-probs the way the advantages say."""

import pytest
import torch

from pipeline.config import load_config
from pipeline.forward import collate
from pipeline.learner import Learner, RolloutBatch


def _config(*overrides):
    base = ["rl.prompts_per_step=2", "rl.group_size=2", "rl.mini_batch_size=4", "rl.micro_batch_size=2",
            "rl.lr=5e-3", "rl.bf16_autocast=false", "rollout.max_tokens=8"]
    return load_config(None, base + list(overrides))


def _batch(learner, prompts, completions):
    seqs = collate(prompts, completions, pad_id=2)
    batch = RolloutBatch(seqs=seqs, loss_mask=seqs.completion_mask.clone(),
                         logp_engine=torch.zeros(seqs.completion_mask.shape))
    learner.prepare(batch)
    with torch.no_grad():
        batch.logp_engine = learner._forward(seqs)[0].logp.float()  # an engine in perfect sync
    return batch


PROMPTS = [[10, 11, 12], [10, 11, 12], [20, 21], [20, 21]]
COMPLETIONS = [[30, 31, 32], [40, 41], [50], [60, 61, 62, 63]]


def _logp(learner, batch):
    with torch.no_grad():
        return learner._forward(batch.seqs)[0].logp


@pytest.mark.parametrize("preset", ["grpo", "dapo", "gspo", "sapo", "dr_grpo", "rloo"])
def test_update_follows_the_advantage_sign(tiny_model_dir, preset):
    torch.manual_seed(0)
    learner = Learner(_config(f"algorithm.preset={preset}"), str(tiny_model_dir), torch.device("cpu"), 10)
    batch = _batch(learner, PROMPTS, COMPLETIONS)
    batch.advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    before = _logp(learner, batch)
    stats = learner.update(batch, torch.Generator().manual_seed(0))
    after = _logp(learner, batch)
    mask = batch.loss_mask
    gain = ((after - before) * mask).sum(-1) / mask.sum(-1)
    assert gain[0] > 0 and gain[2] > 0, gain
    assert gain[1] < 0 and gain[3] < 0, gain
    assert stats["grad_norm"] > 0 and torch.isfinite(torch.tensor(stats["loss"]))
    if preset != "sapo":
        assert stats["clip_frac_low"] == 0 and stats["clip_frac_high"] == 0  # on-policy: ratio 1
    assert stats["mismatch_abs"] < 1e-5


def test_on_policy_step_skips_the_logp_old_pass(tiny_model_dir):
    learner = Learner(_config(), str(tiny_model_dir), torch.device("cpu"), 10)
    batch = _batch(learner, PROMPTS, COMPLETIONS)
    assert learner.on_policy(len(batch)) and batch.logp_old is None
    off = Learner(_config("rl.ppo_epochs=2"), str(tiny_model_dir), torch.device("cpu"), 10)
    batch = _batch(off, PROMPTS, COMPLETIONS)
    assert batch.logp_old is not None and batch.logp_old.shape == batch.loss_mask.shape


def test_kl_reference_is_the_model_without_adapter(tiny_model_dir):
    learner = Learner(_config("algorithm.preset=grpo", "algorithm.kl_coef=0.1"), str(tiny_model_dir),
                      torch.device("cpu"), 10)
    batch = _batch(learner, PROMPTS, COMPLETIONS)
    # A fresh LoRA adapter (B = 0) leaves the model unchanged: reference == policy.
    torch.testing.assert_close(batch.logp_ref * batch.loss_mask, _logp(learner, batch) * batch.loss_mask)
    batch.advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    learner.update(batch, torch.Generator().manual_seed(0))
    learner.prepare(batch)
    assert not torch.allclose(batch.logp_ref * batch.loss_mask, _logp(learner, batch) * batch.loss_mask)


def test_kl_reference_is_the_sft_adapter_rl_starts_from(tiny_model_dir, tiny_policy_factory, tmp_path):
    tiny_policy_factory(scale=0.5).save_pretrained(tmp_path / "sft")
    learner = Learner(_config("algorithm.kl_coef=0.1", f"model.adapter={tmp_path / 'sft'}"), str(tiny_model_dir),
                      torch.device("cpu"), 10)
    batch = _batch(learner, PROMPTS, COMPLETIONS)
    mask = batch.loss_mask
    torch.testing.assert_close(batch.logp_ref * mask, _logp(learner, batch) * mask, rtol=0, atol=1e-5)
    with learner.model.disable_adapter():  # the base model: not what RL started from
        assert not torch.allclose(batch.logp_ref * mask, _logp(learner, batch) * mask, atol=1e-3)


def test_ppo_trains_a_value_head(tiny_model_dir):
    learner = Learner(_config("algorithm.preset=ppo"), str(tiny_model_dir), torch.device("cpu"), 10)
    batch = _batch(learner, PROMPTS, COMPLETIONS)
    assert batch.values_old is not None and batch.logp_ref is not None
    batch.advantages = torch.ones_like(batch.loss_mask, dtype=torch.float32)
    batch.returns = torch.ones_like(batch.advantages)
    stats = learner.update(batch, torch.Generator().manual_seed(0))
    assert stats["vf_loss"] > 0
    assert learner.value_head.bias.item() > 0  # moved toward the returns of 1


def test_filtered_rows_do_not_move(tiny_model_dir):
    torch.manual_seed(0)
    learner = Learner(_config("algorithm.preset=dapo", "lora.target_modules=[q_proj]"), str(tiny_model_dir),
                      torch.device("cpu"), 10)
    batch = _batch(learner, PROMPTS, COMPLETIONS)
    batch.loss_mask[:] = False
    batch.advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    before = [p.detach().clone() for p in learner.params]
    learner.update(batch, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(before, learner.params))


def _trained_params(model_dir, *overrides, advantages):
    torch.manual_seed(0)
    learner = Learner(_config("algorithm.preset=grpo", *overrides), str(model_dir), torch.device("cpu"), 10)
    batch = _batch(learner, PROMPTS, COMPLETIONS)
    batch.advantages = torch.tensor(advantages)
    stats = learner.update(batch, torch.Generator().manual_seed(0))
    return [p.detach().clone() for p in learner.params], stats


@pytest.mark.parametrize("advantages", [[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], ids=["half", "none"])
def test_skipping_zero_advantage_rows_leaves_the_update_unchanged(tiny_model_dir, advantages):
    skipped, stats = _trained_params(tiny_model_dir, "algorithm.kl_coef=0", advantages=advantages)
    computed, full = _trained_params(tiny_model_dir, "algorithm.kl_coef=0", "rl.skip_zero_advantage=false",
                                     advantages=advantages)
    assert stats["learned_frac"] == sum(a != 0 for a in advantages) / 4 and full["learned_frac"] == 1.0
    for a, b in zip(skipped, computed):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # a KL term depends on every row: nothing is skipped
    _, with_kl = _trained_params(tiny_model_dir, "algorithm.kl_coef=0.1", advantages=advantages)
    assert with_kl["learned_frac"] == 1.0


@pytest.mark.parametrize("sampling", [
    ["rollout.top_p=0.5"],
    ["rollout.top_k=50"],
    ["rollout.top_k=50", "rollout.top_p=0.9", "rollout.temperature=0.7"],
], ids=["top_p", "top_k", "both"])
def test_learner_logprobs_are_the_engines_under_truncated_sampling(tiny_model_dir, sampling):
    # Issue 14: with top_p=0.5 (top_k=50) and identical weights the TIS weight was 0.5 (0.0017):
    # the engine renormalises over the kept set, the learner read the whole vocabulary.
    from pipeline.losses import truncated_is_weights
    from pipeline.models import load_tokenizer
    from pipeline.rollout import HFEngine, SamplingSettings

    config = _config("rl.ppo_epochs=2", *sampling)  # two epochs: prepare() computes logp_old
    learner = Learner(config, str(tiny_model_dir), torch.device("cpu"), 10)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    groups = HFEngine(learner.model, tokenizer).generate(PROMPTS[::2], SamplingSettings.from_config(config.rollout, n=2))
    samples = [c for group in groups for c in group]
    seqs = collate([c.prompt_ids for c in samples], [c.token_ids for c in samples], tokenizer.pad_token_id)
    logp_engine = torch.zeros(seqs.completion_mask.shape)
    for i, c in enumerate(samples):
        logp_engine[i, : len(c.logprobs)] = torch.tensor(c.logprobs)
    batch = RolloutBatch(seqs=seqs, loss_mask=seqs.completion_mask.clone(), logp_engine=logp_engine, group_size=2)
    learner.prepare(batch)
    mask = batch.loss_mask
    torch.testing.assert_close(batch.logp_old[mask], logp_engine[mask], atol=1e-4, rtol=0)
    _, stats = truncated_is_weights(batch.logp_old, logp_engine, mask, "token_truncate", 2.0)
    assert stats["tis_weight_mean"] == pytest.approx(1.0, abs=1e-4) and stats["tis_truncated_frac"] == 0
    batch.advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    update = learner.update(batch, torch.Generator().manual_seed(0))
    assert update["mismatch_abs"] < 1e-4 and update["tis_weight_mean"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.vllm
@pytest.mark.parametrize("top_k, top_p", [(-1, 0.5), (50, 1.0)], ids=["top_p", "top_k"])
def test_learner_logprobs_are_vllms_under_truncated_sampling(vllm_merged_engine, tiny_model_dir, top_k, top_p):
    # vLLM serves the base tiny model in float32 with logprobs_mode="processed_logprobs".
    from transformers import AutoModelForCausalLM

    from pipeline.forward import completion_forward
    from pipeline.rollout import SamplingSettings

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    vllm_merged_engine.update_weights(base)
    settings = SamplingSettings(n=2, temperature=1.0, top_k=top_k, top_p=top_p, max_tokens=6)
    samples = [c for group in vllm_merged_engine.generate(PROMPTS[::2], settings) for c in group]
    seqs = collate([c.prompt_ids for c in samples], [c.token_ids for c in samples], pad_id=2)
    with torch.no_grad():
        logp = completion_forward(base, seqs, 1.0, top_k=top_k, top_p=top_p).logp
    for i, c in enumerate(samples):
        torch.testing.assert_close(logp[i, : len(c.logprobs)], torch.tensor(c.logprobs), atol=2e-3, rtol=0)
