"""The preflight's cluster checks (stages/preflight/cluster.py `check_cluster`): what Ray is asked for, checked
without starting it; and a failed join of a remote Ray reported in one line (stages/common.py)."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config
from stages import cli, common
from stages.preflight import cluster as preflight
from stages.preflight.cluster import check_cluster, check_rl_mode


@pytest.fixture
def two_cores_no_gpu(monkeypatch):
    monkeypatch.setattr(preflight.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(preflight.torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("overrides, expected", [
    (["cluster.rollout_workers=2", "cluster.gpus_per_rollout_worker=1"], "ask for 2 GPUs"),
    (["cluster.address=local", "cluster.gpus_per_learner_worker=0.5"], "ask for 0.5 GPUs"),
    (["cluster.address=local", "cluster.cpus_per_rollout_worker=64"], "cluster.cpus_per_rollout_worker=64 is more than the 2 CPUs"),
    (["cluster.rollout_workers=2", "cluster.learner_workers=2", "cluster.cpus_per_learner_worker=3"],
     "cluster.cpus_per_learner_worker=3 is more than the 2 CPUs"),
])
def test_a_private_ray_beyond_this_machine_fails(two_cores_no_gpu, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        check_cluster(load_config(None, overrides))


def test_a_private_ray_within_this_machine_passes(two_cores_no_gpu):
    assert check_cluster(load_config(None, ["cluster.rollout_workers=3"])) == [
        "cluster: private Ray, 4 CPUs for 4 asked, 0 of 0 GPUs"]  # oversubscribed in all: shares the cores
    assert check_cluster(load_config(None)) == []  # no Ray at all


def test_auto_needs_a_running_ray(monkeypatch):
    def nothing_running(address, temp_dir):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(preflight, "get_ray_address_from_environment", nothing_running)
    with pytest.raises(ConfigError, match=r"^cluster.address=auto: no running Ray found.*ray start --head"):
        check_cluster(load_config(None, ["cluster.address=auto"]))
    monkeypatch.setattr(preflight, "get_ray_address_from_environment", lambda address, temp_dir: "127.0.0.1:6379")
    assert check_cluster(load_config(None, ["cluster.address=auto"])) == ["cluster.address: auto (127.0.0.1:6379)"]


def test_a_failed_join_of_a_remote_ray_is_one_line(tmp_path, monkeypatch):
    def unreachable(config, stage):
        raise ConnectionError("Failed to connect to GCS at 10.0.0.1:6379.\nCheck that (1) Ray with matching version...")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "preflight", unreachable)
    with pytest.raises(SystemExit) as info:
        cli.main(["rl", f"output_dir={tmp_path / 'run'}", "cluster.address=10.0.0.1:6379"])
    assert info.value.code == ("rlvr rl: cluster.address=10.0.0.1:6379: cannot join the Ray cluster: "
                               "Failed to connect to GCS at 10.0.0.1:6379.")


def test_the_summary_says_whether_rl_is_asynchronous():
    assert check_rl_mode(load_config(None, ["rl.steps=10"])) == ["rl: synchronous (rl.max_staleness=0)"]
    lines = check_rl_mode(load_config(None, ["rl.steps=10", "rl.max_staleness=2"]))
    assert len(lines) == 1 and lines[0].startswith("rl: asynchronous, max_staleness=2 ")


@pytest.mark.parametrize("staleness, steps", [(3, 3), (5, 2)])
def test_a_staleness_bound_that_bounds_nothing_is_warned_about(staleness, steps, caplog):
    lines = check_rl_mode(load_config(None, [f"rl.steps={steps}", f"rl.max_staleness={staleness}"]))
    assert lines[1] == (f"warning: rl.max_staleness={staleness} >= rl.steps={steps}: it bounds nothing, every "
                        "batch may come from the first weights; 1 or 2 is the usual choice")
    assert caplog.records[-1].levelname == "WARNING"
