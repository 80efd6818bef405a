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
