"""benchmarks/vs_trl.py's pieces that decide fairness: the same problems for both systems, and the
accuracy difference with its paired standard error."""

import importlib.util
import math
import os

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # imports transformers (the benchmark's TRL callback base)


@pytest.fixture(scope="module")
def vs_trl():
    """The benchmark as a module; the environment variables it and TRL set (VLLM_LOGGING_LEVEL,
    offline switches) do not outlive this file's tests."""
    environment = dict(os.environ)
    spec = importlib.util.spec_from_file_location("vs_trl", REPO / "benchmarks" / "vs_trl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    os.environ.clear()
    os.environ.update(environment)


def test_trl_draws_the_problems_of_rlvrs_rl_levels(vs_trl, default_model_dir, tmp_path):
    """The demo trains RL on level 1 (`rl.levels`); TRL must not get levels 1-2 (`data.levels`)."""
    from pipeline.core.models import load_tokenizer

    args = vs_trl.parse_args(["--steps", "3", "--prompts", "4", "--samples", "2", "--out", str(tmp_path),
                              "--adapter", str(tmp_path / "sft")])
    config = vs_trl.rlvr_config(args)
    assert config.rl.levels == [1] and config.data.levels == [1, 2]
    assert config.model.adapter == str(tmp_path / "sft")
    problems = vs_trl.training_problems(config, load_tokenizer(default_model_dir))
    assert len(problems) == 3 * 4
    assert {p.level for p in problems} == {1}


def test_paired_difference_and_its_standard_error(vs_trl):
    evaluation = {"correct": {"rlvr": [1.0, 1.0, 0.0, 1.0], "trl": [1.0, 0.0, 0.0, 0.0]}}
    delta, stderr = vs_trl.paired_difference(evaluation)
    assert delta == pytest.approx(0.5)
    # differences 0, 1, 0, 1: sample sd sqrt(1/3), over sqrt(4)
    assert stderr == pytest.approx(math.sqrt(1 / 3) / 2)
    assert vs_trl.accuracy_line("trl", evaluation) == "0.250 +- 0.250"


@pytest.mark.parametrize("setting", [True, False, "auto"])
def test_trl_autocasts_exactly_where_rlvrs_learner_does(vs_trl, tmp_path, setting, monkeypatch):
    """TRL's `bf16` (autocast over float32 weights) follows `rl.bf16_autocast` as rlvr's learner
    resolves it; `auto` is decided by the CPU (both answers are tried)."""
    pytest.importorskip("trl")
    from benchmarks.vs_trl_trainer import trl_arguments
    from pipeline.core import optim

    args = vs_trl.parse_args(["--out", str(tmp_path), "--adapter", str(tmp_path / "sft")])
    config = vs_trl.rlvr_config(args)
    config = config.model_copy(update={"rl": config.rl.model_copy(update={"bf16_autocast": setting})})
    for native in (True, False):
        monkeypatch.setattr(optim, "bf16_is_native", lambda device, native=native: native)
        expected = native if setting == "auto" else setting
        assert optim.uses_bf16_autocast(torch.device("cpu"), setting) is expected
        assert trl_arguments(config, tmp_path / "trl", use_vllm=False).bf16 is expected


def test_rlvr_set_reaches_rlvrs_run_only(vs_trl, tmp_path, monkeypatch):
    """`--rlvr-set` overrides rlvr's config alone: TRL's settings and the evaluation (both read
    `rlvr_config(args)`) keep the shared work; a bad key stops the benchmark before it runs anything."""
    args = vs_trl.parse_args(["--out", str(tmp_path), "--adapter", str(tmp_path / "sft"),
                              "--rlvr-set", "rollout.engine=hf", "--rlvr-set", "rollout.dtype=float32"])
    shared, rlvr = vs_trl.rlvr_config(args), vs_trl.rlvr_config(args, *args.rlvr_set)
    assert (rlvr.rollout.engine, rlvr.rollout.dtype) == ("hf", "float32")
    assert (shared.rollout.engine, shared.rollout.dtype) == ("auto", "auto")
    assert rlvr.rl == shared.rl and rlvr.model == shared.model

    monkeypatch.setattr("sys.argv", ["vs_trl.py", "--out", str(tmp_path / "run"), "--rlvr-set", "rollout.dtyp=float32"])
    monkeypatch.setattr(vs_trl, "spawn", lambda *a, **k: pytest.fail("a system ran despite the bad override"))
    with pytest.raises(SystemExit, match=r"--rlvr-set: .*'rollout\.dtyp'.*rollout\.dtype"):
        vs_trl.main()
    assert not (tmp_path / "run").exists()


def test_the_cached_sft_start_is_the_demos_sft_stage(vs_trl, tmp_path, monkeypatch):
    """Without `--adapter` the benchmark makes its start with the SFT stage rlvr ships (configs/demo.yaml's
    `sft` settings) into the cache folder, and races from the adapter that stage reports."""
    import stages.sft

    calls = []

    def fake_sft(config, out):
        calls.append((config, out))
        return {"output": str(out / "adapter")}

    monkeypatch.setattr(stages.sft, "run_sft", fake_sft)
    result = vs_trl.run_sft(vs_trl.parse_args(["--out", str(tmp_path)]))
    [(config, out)] = calls
    assert out == vs_trl.SFT_CACHE / "sft" and result == {"adapter": str(vs_trl.SFT_CACHE / "sft" / "adapter")}
    assert config.output_dir == str(vs_trl.SFT_CACHE) and config.sft.max_examples == 320


@pytest.mark.parametrize("preset, packed", [("grpo", False), ("dapo", False), ("dr_grpo", False), ("grpo", True)])
def test_rlvrs_gradient_is_trls_on_the_same_batch(vs_trl, tiny_policy_factory, tiny_model_dir, tmp_path, preset,
                                                  packed):
    """The race's objective is the same on both sides: one batch (two groups, completions of
    different lengths, logp_old off the current policy so the clip acts) through rlvr's learner,
    padded or packed as the race runs it, and through TRL's `GRPOTrainer._compute_loss` (the loss
    type and clip range `trl_arguments` sets) gives the same gradient on every LoRA tensor."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    from benchmarks.vs_trl_trainer import trl_arguments
    from pipeline.algorithms.advantages import Advantages
    from pipeline.config import load_config
    from pipeline.core.forward import collate
    from pipeline.core.models import load_tokenizer
    from pipeline.learner.batch import PolicyScores, RolloutBatch
    from pipeline.learner.learner import Learner

    adapter = tmp_path / "adapter"
    tiny_policy_factory(scale=0.5, seed=1).save_pretrained(adapter)
    config = load_config(None, [
        f"algorithm.preset={preset}", "algorithm.kl_coef=0.0", "rl.group_size=4", "rl.prompts_per_step=2",
        "rl.mini_batch_size=8", "rl.micro_batch_size=8", "rl.bf16_autocast=false", "rollout.max_tokens=8",
        "lora.rank=8", "lora.alpha=16", f"model.adapter={adapter}", f"rl.pack_sequences={packed}"])
    prompts = [[10, 11, 12]] * 4 + [[20, 21, 22, 23, 24]] * 4
    completions = [[30, 31, 32, 2], [40, 41], [50, 51, 52, 53, 54, 2], [60],
                   [70, 71, 2], [80, 81, 82, 83, 84, 85, 86, 87], [90, 91], [100, 101, 102, 2]]
    advantages = torch.tensor([1.2, -0.4, 0.3, -1.1, 0.9, -0.9, 0.5, -0.5])
    seqs = collate(prompts, completions, pad_id=2)
    mask = seqs.completion_mask

    learner = Learner(config, str(tiny_model_dir), torch.device("cpu"), total_updates=1)
    with torch.no_grad():
        logp = learner._forward(seqs)[0].logp.float()
    logp_old = torch.where(mask, logp + 0.3 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(0)), 0.0)
    batch = RolloutBatch(seqs=seqs, loss_mask=mask.clone(), logp_engine=logp_old, rewards=torch.zeros(8), group_size=4)
    norm = dict(num_tokens=int(mask.sum()), num_seqs=len(completions), max_len=config.rollout.max_tokens)
    learner.model.train()
    stats, _ = learner._accumulate(batch, PolicyScores(logp_old, None, None), Advantages(advantages),
                                   torch.arange(8), norm)
    assert 0 < stats["clip_frac/low"] + stats["clip_frac/high"] < 1  # the clip acts on some tokens only
    ours = {name: p.grad for name, p in learner.model.named_parameters() if p.requires_grad}

    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32"),
                                       str(adapter), is_trainable=True)
    tokenizer = load_tokenizer(tiny_model_dir)
    trainer = GRPOTrainer(model=policy, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                          train_dataset=Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}]),
                          args=trl_arguments(config, tmp_path / "trl", use_vllm=False), processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    prompt_width = seqs.prompt_width
    inputs = dict(prompt_ids=seqs.input_ids[:, :prompt_width], prompt_mask=seqs.attention_mask[:, :prompt_width],
                  completion_ids=seqs.completion_ids, completion_mask=mask.long(), advantages=advantages,
                  old_per_token_logps=logp_old, num_items_in_batch=mask.sum())
    policy.train()
    trainer._compute_loss(policy, inputs).backward()
    theirs = {name: p.grad for name, p in policy.named_parameters() if p.requires_grad}

    assert ours.keys() == theirs.keys() and len(ours) > 0
    for name, grad in theirs.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(ours[name], grad, rtol=1e-4, atol=1e-7, msg=name)
