"""The data-parallel learner (pipeline/cluster/learner_group.py) on the session's local Ray: two ranks
take the one-process update, the config refuses more ranks than groups, a lost rank stops the run."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from pipeline.cluster.learner_group import ACTOR_PREFIX, LearnerGroup
from pipeline.config import ConfigError, load_config
from pipeline.core.checkpoint import latest_checkpoint, load_state
from pipeline.core.forward import collate
from pipeline.core.tracking import read_metrics
from pipeline.algorithms.advantages import Advantages
from pipeline.learner.batch import RolloutBatch
from pipeline.learner.learner import Learner
from pipeline.learner.micro_batches import group_order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKS = ["cluster.learner_workers=2", "cluster.cpus_per_learner_worker=0.5", "cluster.collective_timeout_s=20"]

# four groups of two; two mini-batches of two groups: one group per rank per optimiser step
PROMPTS = [[10, 11, 12]] * 2 + [[20, 21]] * 2 + [[30, 31, 32, 33]] * 2 + [[40]] * 2
COMPLETIONS = [[50, 51, 52], [53, 54], [55], [56, 57, 58, 59], [60, 61], [62, 63, 64, 65, 66], [67], [68, 69]]


def _config(*overrides):
    return load_config(None, [
        "algorithm.preset=grpo", "algorithm.kl_coef=0", "rl.prompts_per_step=4", "rl.group_size=2", "rl.mini_batch_size=4",
        "rl.micro_batch_size=2", "rl.ppo_epochs=2", "rl.lr=5e-3", "rl.bf16_autocast=false",
        "rollout.max_tokens=8", "model.dtype=float32", *RANKS, *overrides])


def _batch(learner):
    """The batch of an engine in sync with `learner`."""
    seqs = collate(PROMPTS, COMPLETIONS, pad_id=2)
    with torch.no_grad():
        logp_engine = learner._forward(seqs)[0].logp.float()
    return RolloutBatch(seqs=seqs, loss_mask=seqs.completion_mask.clone(), logp_engine=logp_engine,
                        rewards=torch.zeros(len(COMPLETIONS)), group_size=2)


def _trained(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
def test_two_ranks_take_the_one_process_update(ray_address, tiny_fp32_model_dir, agg):
    config = _config(f"algorithm.loss_agg={agg}")
    group = LearnerGroup(config, str(tiny_fp32_model_dir), torch.device("cpu"), 10)
    try:
        single = Learner(config, str(tiny_fp32_model_dir), torch.device("cpu"), 10)
        single.model.load_state_dict(group.model.state_dict())
        batch = _batch(single)
        # first update: in the first mini-batch of the first epoch, rank 1's group has zero advantage
        first_mini = group_order(len(batch), 2, torch.Generator().manual_seed(0))[:4]
        skipped = torch.zeros(len(batch), dtype=torch.bool)
        skipped[first_mini[2:]] = True
        signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 0.5, -0.5, 2.0, -2.0])
        one_rank_idle = Advantages(torch.where(skipped, 0.0, signs))
        shuffle_single, shuffle_group = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        learned = []
        for advantages in (one_rank_idle, Advantages(signs)):
            want_scores, got_scores = single.score(batch), group.score(batch)
            torch.testing.assert_close(got_scores.logp_old * batch.loss_mask, want_scores.logp_old * batch.loss_mask,
                                       rtol=1e-6, atol=1e-6)
            want = single.update(batch, want_scores, advantages, shuffle_single)
            got = group.update(batch, got_scores, advantages, shuffle_group)
            assert got["train/learned_frac"] == want["train/learned_frac"]
            assert got["train/grad_norm"] == pytest.approx(want["train/grad_norm"], rel=1e-5)
            assert torch.equal(shuffle_group.get_state(), shuffle_single.get_state())
            # Adam's steps divide by |g| + eps: the float-reordering noise of near-zero gradients moves
            # weights by up to ~1% of lr (as one process with another rl.micro_batch_size does); a
            # wrong normaliser moves them by a sizeable part of lr, and changes the grad norm above
            expected, actual = _trained(single.model), _trained(group.model)  # the replica is rank 0's
            assert max((actual[k] - expected[k]).abs().max().item() for k in expected) < 0.02 * config.rl.lr
            assert got["train/grad_norm"] > 0
            learned.append(got["train/learned_frac"])
        # the idle group in both epochs; rank 1 computed nothing in the first optimiser step, yet joined it
        assert learned == [12 / 16, 1.0]
    finally:
        group.close()


@pytest.mark.parametrize("override", ["rl.mini_batch_size=2", "rl.mini_batch_size=4 rl.group_size=4",
                                      "rl.mini_batch_size=6 rl.group_size=4 rl.prompts_per_step=3"])
def test_fewer_groups_per_mini_batch_than_ranks_is_a_config_error(override):
    with pytest.raises(ConfigError, match="cluster.learner_workers=2"):
        _config(*override.split())
    _config(*override.split(), "cluster.learner_workers=1")  # one process takes any mini-batch


STEPS = 40  # long enough that the kill lands mid-run even when every step is fast (all rewards 0)


def _run(out, problems, model_dir, *extra, address, log):
    """`rlvr rl` as a user types it, on the test run's Ray; its output goes to `log`."""
    args = [sys.executable, "-m", "stages.cli", "rl", f"model.name={model_dir}", f"output_dir={out}",
            f"data.train={problems}", f"data.test={problems}", f"rl.steps={STEPS}", "rl.prompts_per_step=2",
            "rl.group_size=2", "rl.mini_batch_size=4", "rl.micro_batch_size=2", "rl.eval_every=0",
            "rl.save_every=1", "rollout.engine=hf", "rollout.max_tokens=8", "rollout.temperature=1.0",
            "reward.workers=1", "rl.bf16_autocast=false", f"cluster.address={address}", *extra]
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_a_lost_learner_rank_stops_the_run_and_resume_continues(ray_address, tiny_model_dir, tmp_path):
    import ray

    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i), "level": 1}) + "\n"
                                for i in range(8)))
    out = tmp_path / "run"
    log = tmp_path / "run.log"
    run = _run(out, problems, tiny_model_dir, *RANKS, address=ray_address, log=log)
    while latest_checkpoint(out / "rl") is None and run.poll() is None:  # after the first update
        time.sleep(0.2)
    ranks = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(ACTOR_PREFIX)]
    victim = next(a for a in ranks if a["name"].endswith("-1"))
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]))
    assert run.wait(timeout=120) != 0, log.read_text()
    output = log.read_text()
    assert "learner rank 1 of 2" in output and "--resume" in output, output
    saved = load_state(latest_checkpoint(out / "rl"))["step"]
    assert 1 <= saved < STEPS and not (out / "rl" / "final").exists()

    # one rank continues what two began: the checkpoint is one Learner's
    log = tmp_path / "resume.log"
    resumed = _run(out, problems, tiny_model_dir, "--resume", address=ray_address, log=log)
    assert resumed.wait(timeout=300) == 0, log.read_text()
    assert [r["step"] for r in read_metrics(out / "rl" / "metrics.jsonl")] == list(range(STEPS))  # eval_every=0
    assert (out / "rl" / "final" / "adapter" / "adapter_config.json").is_file()
