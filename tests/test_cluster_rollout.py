"""Rollout workers on Ray (pipeline/cluster): sharding, weight sync on every worker, a worker killed
mid-generation, a hung worker, and the CLI with two workers. The Ray tests share the session's
Ray (`ray_address`) and one pool of two HF workers on the tiny model."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import ClusterConfig, Config, ConfigError, RolloutConfig, load_config
from pipeline.cluster import EngineSpec, RayRuntime, RolloutPool, shard_groups
from pipeline.rollout import SamplingSettings, check_sync, learner_logprobs
from pipeline.rollout.weights import weights_payload

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
COMPLETION = [30, 31, 32, 33, 34, 35]
SAMPLING = SamplingSettings(n=3, temperature=1.0, max_tokens=8)


def test_shards_are_whole_groups_balanced_by_cost():
    costs = [8.0, 1.0, 1.0, 3.0, 3.0, 2.0]
    shards = shard_groups(costs, 2)
    assert sorted(i for shard in shards for i in shard) == list(range(6))  # every group once
    assert sorted(sum(costs[i] for i in shard) for shard in shards) == [9.0, 9.0]
    assert shard_groups([1.0], 3) == [[0], [], []]


def test_one_worker_of_each_without_an_address_uses_no_ray():
    assert RayRuntime.start(Config()) is None


@pytest.mark.parametrize("address", ["local", "auto", "ray://head:10001", "10.0.0.1:6379"])
def test_cluster_addresses_accepted(address):
    assert ClusterConfig(address=address).uses_ray


def test_a_malformed_address_is_a_config_error():
    with pytest.raises(ConfigError, match="cluster.address"):
        load_config(None, ["cluster.address=headnode"])


@pytest.mark.parametrize("sync", ["merged", "adapter"])
def test_an_engine_of_its_own_loads_a_weights_payload(sync, tiny_model_dir, tiny_policy_factory):
    """What a worker does with the object store's payload: its own base model, the learner's weights."""
    engine = EngineSpec(str(tiny_model_dir), RolloutConfig(engine="hf")).build(0)
    policy = tiny_policy_factory(scale=0.5, seed=5)
    payload = pickle.loads(pickle.dumps(weights_payload(policy, sync, engine.dtype, version=7)))
    base = engine.prompt_logprobs(PROMPTS[0], COMPLETION)
    assert engine.load_weights(payload) == 7 == engine.version
    learner = learner_logprobs(policy, 0, PROMPTS[0], COMPLETION)
    assert engine.prompt_logprobs(PROMPTS[0], COMPLETION) == pytest.approx(learner, abs=1e-4)
    assert base != pytest.approx(learner, abs=1e-3)


def test_the_sync_check_covers_every_worker(tiny_policy_factory, tiny_model_dir):
    from transformers import AutoTokenizer

    policy = tiny_policy_factory(scale=0.5, seed=6)
    learner = learner_logprobs(policy, 0, PROMPTS[0], COMPLETION)

    class OneStaleWorker:
        def worker_logprobs(self, prompt_ids, completion_ids, temperature=1.0):
            return [learner, [x + 0.5 for x in learner]]

    report = check_sync(OneStaleWorker(), policy, AutoTokenizer.from_pretrained(tiny_model_dir),
                        PROMPTS[0], COMPLETION)
    assert not report.passed and report.mean_abs_diff == pytest.approx(0.5, abs=1e-5)


# ------------------------------------------------------------------ on Ray


def _hang_once(generate, hold: Path):
    """`generate`, except that the first call after `hold` appears consumes it, touches `holding`
    and hangs (until the process is killed)."""

    def generate_or_hang(prompts, sampling):
        if hold.exists():
            hold.unlink()
            (hold.parent / "holding").touch()
            time.sleep(3600)
        return generate(prompts, sampling)

    return generate_or_hang


@dataclass(frozen=True)
class HangingSpec(EngineSpec):
    """The HF engine; worker 1 hangs in `generate` once `hold` exists (see `_hang_once`)."""

    hold: str = ""

    def build(self, index: int):
        engine = super().build(index)
        if index == 1:
            engine.generate = _hang_once(engine.generate, Path(self.hold))
        return engine


@pytest.fixture(scope="module")
def pool(ray_address, tiny_model_dir, tmp_path_factory):
    """Two HF rollout workers on the tiny model (merged weights), half a CPU each."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    hold = tmp_path_factory.mktemp("hold") / "hold"
    spec = HangingSpec(str(tiny_model_dir), RolloutConfig(engine="hf", sync="merged"), hold=str(hold))
    pool = RolloutPool(spec, ClusterConfig(rollout_workers=2, cpus_per_rollout_worker=0.5,
                                           rollout_timeout_s=120), sync="merged")
    pool.hold = hold
    yield pool
    pool.close()


@pytest.mark.slow
def test_workers_asking_for_more_than_the_cluster_has_are_a_config_error(ray_address, tiny_model_dir):
    spec = EngineSpec(str(tiny_model_dir), RolloutConfig(engine="hf"))
    with pytest.raises(ConfigError, match="cluster.rollout_workers: 2 workers x 1 GPU"):
        RolloutPool(spec, ClusterConfig(rollout_workers=2, gpus_per_rollout_worker=1), sync="merged")


def _assert_serves(pool: RolloutPool, policy, tokenizer) -> None:
    """Every worker serves the pool's version, and its log-probs of a fixed completion are the learner's."""
    assert pool.worker_versions() == [pool.version] * len(pool.workers)
    learner = learner_logprobs(policy, tokenizer.pad_token_id, PROMPTS[0], COMPLETION)
    for served in pool.worker_logprobs(PROMPTS[0], COMPLETION):
        assert served == pytest.approx(learner, abs=1e-4)
    assert check_sync(pool, policy, tokenizer, PROMPTS[0], COMPLETION).max_abs_diff < 1e-4  # the worst worker


def _assert_groups(groups) -> None:
    assert [[c.prompt_ids for c in g] for g in groups] == [[p] * SAMPLING.n for p in PROMPTS]


@pytest.mark.slow
def test_every_worker_serves_each_new_version(pool, tiny_policy_factory, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    served = []
    for seed in (1, 2):
        policy = tiny_policy_factory(scale=0.5, seed=seed)
        version = pool.update_weights(policy)
        _assert_serves(pool, policy, tokenizer)
        served.append(pool.prompt_logprobs(PROMPTS[0], COMPLETION))
        _assert_groups(pool.generate(PROMPTS, SAMPLING))
        metrics = pool.metrics()
        assert [metrics[f"rollout/worker{w}/version"] for w in (0, 1)] == [version, version]
        assert all(metrics[f"rollout/worker{w}/tokens_per_s"] > 0 for w in (0, 1))
    assert served[0] != pytest.approx(served[1], abs=1e-3)  # the two versions differ: the check can fail


@pytest.mark.slow
def test_a_worker_killed_mid_generation_comes_back_with_current_weights(pool, tiny_policy_factory, tiny_model_dir):
    import ray
    from transformers import AutoTokenizer

    policy = tiny_policy_factory(scale=0.5, seed=3)
    pool.update_weights(policy)
    restarts = pool.restarts
    pool.hold.touch()
    result: dict = {}

    def step():
        try:
            result["groups"] = pool.generate(PROMPTS, SAMPLING)
        except Exception as exc:  # noqa: BLE001 - handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=step)
    thread.start()
    holding = pool.hold.parent / "holding"
    for _ in range(600):  # worker 1 is inside generate once `holding` exists
        if holding.exists():
            break
        time.sleep(0.2)
    holding.unlink()
    ray.kill(pool.workers[1], no_restart=False)
    thread.join(timeout=600)
    assert "error" not in result, result.get("error")
    _assert_groups(result["groups"])
    assert pool.restarts == restarts + 1
    _assert_serves(pool, policy, AutoTokenizer.from_pretrained(tiny_model_dir))


@pytest.mark.slow
def test_a_hung_worker_is_timed_out_restarted_and_its_shard_generated_again(pool, tiny_policy_factory):
    pool.update_weights(tiny_policy_factory(scale=0.5, seed=4))
    timeouts, restarts, pool.timeout_s = pool.timeouts, pool.restarts, 8.0
    pool.hold.touch()
    try:
        groups = pool.generate(PROMPTS, SAMPLING)
    finally:
        pool.timeout_s = 120.0
    _assert_groups(groups)
    assert (pool.timeouts, pool.restarts) == (timeouts + 1, restarts + 1)
    assert pool.worker_versions() == [pool.version, pool.version]


def run_rl_cli(overrides: list[str], ray_address: str, model_dir: Path, tmp_path: Path) -> list[dict]:
    """`rlvr rl configs/demo.yaml` on the tiny model for two steps, as a user types it, joining the test
    run's Ray, with `overrides` (two rollout workers: the caller's); asserts it exits 0 and leaves a
    final adapter, and returns the records of metrics.jsonl."""
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i), "level": 1})
                                + "\n" for i in range(8)))
    argv = ["rl", "configs/demo.yaml", *overrides, "rollout.engine=hf",
            f"cluster.address={ray_address}", f"model.name={model_dir}", f"output_dir={tmp_path / 'run'}",
            f"data.train={problems}", f"data.test={problems}", "rl.steps=2", "rl.prompts_per_step=2",
            "rl.group_size=4", "rl.mini_batch_size=8", "rl.micro_batch_size=4", "rl.eval_every=0", "rl.save_every=0",
            "rollout.max_tokens=12", "reward.workers=1", "rl.bf16_autocast=false"]
    rlvr = Path(sys.executable).with_name("rlvr")
    command = [str(rlvr), *argv] if rlvr.exists() else [sys.executable, "-m", "stages.cli", *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "rl" / "final" / "adapter").is_dir()
    return [json.loads(line) for line in (tmp_path / "run" / "rl" / "metrics.jsonl").read_text().splitlines()]


def assert_workers_served_each_version(records: list[dict], workers: int) -> None:
    """Steps 0 and 1 updated (eval_every=0: no final rollout); every worker reported the version the step pushed."""
    assert [r["step"] for r in records] == [0, 1]
    for record in records:
        version = record["weights/version"]
        assert [record[f"rollout/worker{w}/version"] for w in range(workers)] == [version] * workers
        assert record["idle/learner_waiting_rollouts_s"] > 0


@pytest.mark.slow
def test_cli_rl_with_two_rollout_workers(ray_address, tiny_model_dir, tmp_path):
    records = run_rl_cli(["cluster.rollout_workers=2", "cluster.cpus_per_rollout_worker=0.5"], ray_address,
                         tiny_model_dir, tmp_path)
    assert_workers_served_each_version(records, 2)
