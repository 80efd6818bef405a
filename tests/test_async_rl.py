"""Asynchronous RL (docs/design.md, "Asynchronous RL"): the rollout queue, weight versions, the
staleness bound, the behaviour policy's logp_old, dynamic sampling and resume with batches in
flight, and a run on a Ray rollout worker whose order of events shows the overlap."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import rewards
import stages.rl
from canned_engine import CannedEngine
from pipeline.config import ConfigError, load_config
from pipeline.core.tracking import read_metrics, timed
from pipeline.data.problems import Problem
from pipeline.data.prompts import PromptStream
from pipeline.learner.batch import build_batch
from pipeline.learner.learner import Learner
from pipeline.rl.events import EventLog, read_events
from pipeline.rl.rollout_queue import RolloutQueue
from pipeline.rl.trainer import Trainer
from pipeline.rollout import Completion, SamplingSettings, learner_logprobs

PROMPTS_PER_STEP = 2


def _config(model_dir, problems_file, out, *overrides):
    return load_config(None, [
        f"model.name={model_dir}", f"output_dir={out}", f"data.train={problems_file}", f"data.test={problems_file}",
        "rl.steps=3", f"rl.prompts_per_step={PROMPTS_PER_STEP}", "rl.group_size=4", "rl.mini_batch_size=8",
        "rl.micro_batch_size=4", "rl.eval_every=0", "rl.save_every=0", "rollout.max_tokens=12",
        "reward.workers=1", "rl.bf16_autocast=false", *overrides])


@rewards.register("async_alternating")
def _alternating(**_params):
    """0, 1, 0, 1, ...: every group has reward variance, so every step updates the policy."""
    return lambda completions, **_columns: [float(i % 2) for i in range(len(completions))]


@rewards.register("async_half_uniform")
def _half_uniform(**_params):
    """Gold answers divisible by 4: every completion scores 1 (no signal); else completion j scores j % 2."""

    def reward(completions, answer, **_columns):
        return [1.0 if int(a) % 4 == 0 else float(c.endswith(("1", "3"))) for c, a in zip(completions, answer)]

    return reward


# ------------------------------------------------------------------ config


def test_async_rl_uses_a_rollout_pool_on_ray_even_with_one_worker():
    sync, asynchronous = load_config(None, []), load_config(None, ["rl.max_staleness=1"])
    assert not sync.uses_pool and not sync.uses_ray
    assert asynchronous.uses_pool and asynchronous.uses_ray
    assert asynchronous.cluster.rollout_workers == 1


def test_async_rl_with_a_colocated_engine_is_a_config_error():
    with pytest.raises(ConfigError, match=r"rl.max_staleness=1 .* cluster.colocate"):
        load_config(None, ["rl.max_staleness=1", "cluster.colocate=true"])
    with pytest.raises(ConfigError, match="rl.max_staleness"):
        load_config(None, ["rl.max_staleness=-1"])


# ------------------------------------------------------------------ the queue


class _Recorder(CannedEngine):
    """A canned engine that remembers each submission's prompts and the version it sampled with."""

    def __init__(self):
        super().__init__()
        self.submitted: list[tuple[int, list[list[int]]]] = []

    def submit(self, prompts, sampling):
        self.submitted.append((self.version, prompts))
        return super().submit(prompts, sampling)


def _queue(tmp_path, max_staleness: int, last_version: int = 100):
    problems = [Problem(problem=f"p{i}", answer=str(i)) for i in range(10)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = _Recorder()
    stream = PromptStream(problems, 3, seed=1)
    queue = RolloutQueue(engine, stream, lambda batch: [[int(p.answer)] for p in batch],
                         SamplingSettings(n=2, max_tokens=4), max_staleness=max_staleness,
                         last_version=last_version, events=EventLog(tmp_path))
    return queue, engine, PromptStream(problems, 3, seed=1)


def test_at_max_staleness_0_each_draw_submits_with_the_current_weights_and_collects_it(tmp_path):
    queue, engine, reference = _queue(tmp_path, 0)
    for version in range(3):
        engine.update_weights(None, version)
        rollout = queue.next(version)
        assert (rollout.batch, rollout.version, len(queue.in_flight)) == (version, version, 0)
        assert rollout.problems == reference.next_batch()  # the stream's batches, in order
        assert {c.version for group in rollout.groups for c in group} == {version}
    assert [v for v, _ in engine.submitted] == [0, 1, 2]


def test_a_queue_keeps_one_plus_max_staleness_batches_in_flight(tmp_path):
    queue, engine, _ = _queue(tmp_path, 2, last_version=4)
    got = []
    for version in range(5):
        engine.update_weights(None, version)
        rollout = queue.next(version)
        got.append((rollout.batch, rollout.version, len(queue.in_flight)))
    # three in flight at the first draw; batch b (submitted at version max(0, b - 2)) trains at b;
    # no batch is submitted that no version up to last_version=4 would train on
    assert got == [(0, 0, 2), (1, 0, 2), (2, 0, 2), (3, 1, 1), (4, 2, 0)]
    assert [v for v, _ in engine.submitted] == [0, 0, 0, 1, 2]
    assert queue.dropped == 0


@pytest.mark.parametrize("max_staleness", [1, 2])
def test_the_final_policys_draw_is_sampled_by_the_final_weights(tmp_path, max_staleness):
    """The draw after the last training version (the record of the final policy, rl.steps) finds
    nothing submitted ahead for it: its batch is submitted, and sampled, at its own version."""
    last = 3
    queue, engine, _ = _queue(tmp_path, max_staleness, last_version=last)
    for version in range(last + 2):
        engine.update_weights(None, version)
        rollout = queue.next(version)
        assert rollout.version <= version and version - rollout.version <= max_staleness
    assert rollout.version == last + 1 and engine.submitted[-1][0] == last + 1
    assert len(engine.submitted) == last + 2 and not queue.in_flight


def test_batches_older_than_max_staleness_are_dropped_and_counted(tmp_path):
    queue, engine, _ = _queue(tmp_path, 1)
    queue.next(0)  # batch 0; batch 1 stays in flight, sampled by version 0
    engine.update_weights(None, 3)
    rollout = queue.next(3)  # batch 1 is 3 versions old: dropped; batch 2 (version 3) is in flight
    assert (rollout.batch, rollout.version, queue.dropped) == (2, 3, 3)  # 3 prompts = 3 groups dropped
    events = read_events(tmp_path)
    dropped = [e for e in events if e["event"] == "batch_dropped"]
    assert [(e["batch"], e["staleness"], e["groups"]) for e in dropped] == [(1, 3, 3)]


def test_the_queue_state_is_the_stream_before_the_oldest_batch_in_flight(tmp_path):
    queue, engine, reference = _queue(tmp_path, 1)
    queue.next(0)
    reference.next_batch()  # batch 0 was trained; batch 1 is in flight
    state = queue.state_dict()
    assert state == {"stream": reference.state_dict(), "next_batch": 1}
    with pytest.raises(RuntimeError, match="in flight"):
        queue.load_state_dict(state)
    resumed, _, _ = _queue(tmp_path / "resumed", 1)
    resumed.load_state_dict(state)
    rollout = resumed.next(1)
    assert rollout.batch == 1 and rollout.problems == reference.next_batch()  # drawn again


# ------------------------------------------------------------------ the behaviour policy's logp_old


def _learner(model_dir, *overrides) -> Learner:
    config = load_config(None, [f"model.name={model_dir}", "model.dtype=float32", "rl.bf16_autocast=false",
                                "rl.prompts_per_step=1", "rl.group_size=4", "rl.mini_batch_size=4",
                                "rl.micro_batch_size=2", "lora.rank=4", "lora.alpha=8", *overrides])
    return Learner(config, str(model_dir), torch.device("cpu"), total_updates=1)


ROWS = [([1, 2, 3], [30, 31, 32, 33]), ([1, 2, 3], [40, 41]), ([1, 2, 3], [50, 51, 52]), ([1, 2, 3], [60])]


def _batch(versions, policy_version, engine_logp=-1.5):
    return build_batch([p for p, _ in ROWS], [c for _, c in ROWS], [[engine_logp] * len(c) for _, c in ROWS],
                       [0.0, 1.0, 0.0, 1.0], [True] * 4, [False] * 4, 4, 0, False,
                       versions=versions, policy_version=policy_version)


def _logp(model, rows=ROWS):
    return [learner_logprobs(model, 0, p, c) for p, c in rows]


def _perturb(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)


def test_stale_rows_are_scored_under_the_adapter_that_sampled_them(tiny_fp32_model_dir):
    learner = _learner(tiny_fp32_model_dir)
    _perturb(learner.model, 1)
    behaviour = _logp(learner.model)  # version 0
    learner.keep_version(0, keep=1)
    _perturb(learner.model, 2)  # the update that made version 1
    current = _logp(learner.model)
    params = {n: p.detach().clone() for n, p in learner.model.named_parameters() if p.requires_grad}

    scores = learner.score(_batch([0, 0, 1, 1], policy_version=1))
    assert scores.logp_old_source == "learner_adapter"
    for row, (_, completion) in enumerate(ROWS):
        want = behaviour[row] if row < 2 else current[row]  # rows 2, 3 were sampled by version 1
        assert scores.logp_old[row, : len(completion)].tolist() == pytest.approx(want, abs=1e-5)
    ratio = [torch.tensor(current[row]) - torch.tensor(behaviour[row]) for row in (0, 1)]
    assert max(float(r.abs().max()) for r in ratio) > 1e-3  # the stale rows' ratio is not 1
    assert all(torch.equal(p, params[n]) for n, p in learner.model.named_parameters() if p.requires_grad)

    learner.keep_version(1, keep=1)
    assert sorted(learner.kept) == [0, 1]
    learner.keep_version(2, keep=1)  # version 0 is forgotten: a batch at version 2 holds rows of 1 and 2
    assert sorted(learner.kept) == [1, 2]
    with pytest.raises(KeyError, match="policy version 0 is not kept"):
        learner.score(_batch([0, 0, 2, 2], policy_version=2))


def test_without_stale_rows_logp_old_is_the_current_policys(tiny_fp32_model_dir):
    learner = _learner(tiny_fp32_model_dir)
    scores = learner.score(_batch([3, 3, 3, 3], policy_version=3))
    assert scores.logp_old is None and scores.logp_old_source == "learner"  # on-policy: the first forward


def test_without_lora_stale_rows_take_the_engines_logp(tiny_fp32_model_dir):
    learner = _learner(tiny_fp32_model_dir, "lora.enabled=false")
    learner.keep_version(0, keep=1)
    assert learner.kept == {}  # nothing kept of a full model
    scores = learner.score(_batch([0, 0, 1, 1], policy_version=1, engine_logp=-2.25))
    assert scores.logp_old_source == "engine"
    current = _logp(learner.model)
    for row, (_, completion) in enumerate(ROWS):
        want = [-2.25] * len(completion) if row < 2 else current[row]
        assert scores.logp_old[row, : len(completion)].tolist() == pytest.approx(want, abs=1e-5)


# ------------------------------------------------------------------ the trainer at max_staleness 0


def _synchronous_draw(self, record):
    """The step's draw as it was before the rollout queue: the next prompts, generated, scored."""
    problems = self.stream.next_batch()
    prompt_ids = self._encode(problems)
    with timed(record, "generate"):
        outputs = self.engine.generate(prompt_ids, self.sampling)
    record["async/batches"].append(len(record["async/batches"]))
    with timed(record, "reward"):
        return self._score(problems, prompt_ids, outputs, self.step)


def _trained(config):
    trainer = Trainer(config)
    trainer.run()
    trainer.close()
    return [p.detach().clone() for p in trainer.learner.model.parameters() if p.requires_grad]


@pytest.mark.slow
def test_max_staleness_0_through_the_queue_equals_the_synchronous_step(tiny_fp32_model_dir, problems_file,
                                                                       tmp_path, monkeypatch):
    overrides = ["model.dtype=float32", "rollout.engine=hf", "rl.steps=2", "rl.lr=1e-2", "rollout.temperature=1.0",
                 "algorithm.preset=grpo", "reward.terms=[{name: async_alternating}]"]
    queued = _trained(_config(tiny_fp32_model_dir, problems_file, tmp_path / "queued", *overrides))
    monkeypatch.setattr(Trainer, "_draw", _synchronous_draw)
    synchronous = _trained(_config(tiny_fp32_model_dir, problems_file, tmp_path / "sync", *overrides))
    gap = max((a - b).abs().max().item() for a, b in zip(queued, synchronous))
    assert gap <= 1e-6, f"parameters differ by {gap:g}"  # float reordering at most
    records = read_metrics(tmp_path / "queued" / "rl" / "metrics.jsonl")
    assert [r["async/staleness_0"] for r in records] == [PROMPTS_PER_STEP] * 2  # steps 0-1 (eval_every=0: no final record)
    assert [r["weights/version"] for r in records[:2]] == [1, 2]


# ------------------------------------------------------------------ the trainer at max_staleness 1


class _SometimesTruncated(CannedEngine):
    """Completion 0 of every prompt hits max_tokens (finish_reason "length")."""

    def generate(self, prompts, sampling):
        groups = super().generate(prompts, sampling)
        for group in groups:
            group[0] = Completion(group[0].prompt_ids, group[0].token_ids, group[0].logprobs, group[0].text,
                                  "length", group[0].version)
        return groups


def _account(records, events, steps):
    """Every batch submitted is drawn by exactly one step's record, dropped, or was in flight at the end."""
    submitted = [e["batch"] for e in events if e["event"] == "generate_submitted"]
    drawn = [b for r in records for b in r["async/batches"]]
    dropped = [e["batch"] for e in events if e["event"] == "batch_dropped"]
    assert len(set(submitted)) == len(submitted)
    assert Counter(drawn + dropped) == Counter(submitted)  # each once; nothing left in flight after the last step
    assert sum(r["async/dropped_groups"] for r in records) == records[-1]["async/dropped_groups_total"] == sum(
        e["groups"] for e in events if e["event"] == "batch_dropped")


@pytest.mark.slow
def test_dynamic_sampling_and_the_overlong_filter_at_max_staleness_1(ray_address, tiny_model_dir, problems_file,
                                                                    tmp_path, monkeypatch):
    """The canned engine generates at submission; Ray only stands by (the session's, joined)."""
    import pipeline.rl.trainer

    config = _config(tiny_model_dir, problems_file, tmp_path, "rl.max_staleness=1", "algorithm.preset=dapo",
                     "algorithm.overlong_filter=true", "algorithm.max_num_gen_batches=6", "rl.prompts_per_step=4",
                     "rl.mini_batch_size=16", "reward.terms=[{name: async_half_uniform}]")
    monkeypatch.setattr(pipeline.rl.trainer, "make_pool", lambda *a, **k: _SometimesTruncated())
    batches = []
    build = Trainer.build_batch
    monkeypatch.setattr(Trainer, "build_batch", lambda self, groups: batches.append(build(self, groups)) or batches[-1])
    stages.rl.run(config)

    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    events = read_events(tmp_path / "rl")
    assert [r["step"] for r in records] == [0, 1, 2]  # eval_every=0: no final record
    assert sum(r["sampling/gen_batches"] for r in records) > len(records)  # half the groups lack signal
    for record in records:
        assert record["sampling/gen_batches"] == len(record["async/batches"])
        assert record["sampling/kept_groups"] == 4
        assert record["async/staleness_0"] + record["async/staleness_1"] == 4
        assert record["truncation_rate"] == pytest.approx(0.25)
    _account(records, events, steps=3)
    assert any(r["async/staleness_1"] for r in records)
    for record in records[:3]:  # the behaviour policy's logp_old exactly when a trained group is stale
        assert record["async/logp_old_source"] == ("learner_adapter" if record["async/staleness_1"] else "learner")
    for batch in batches:  # the overlong filter: completion 0 of each group counts for nothing
        assert not batch.loss_mask[:: batch.group_size].any() and batch.loss_mask[1:: batch.group_size].any()
        assert ((batch.policy_version - batch.versions) <= 1).all()


@rewards.register("async_uniform_at_step_1")
def _uniform_at_step_1(**_params):
    """At step 1 every completion scores 1 (no group has signal); else 0, 1, 0, 1, ..."""
    return lambda completions, step, **_columns: [1.0 if step == 1 else float(i % 2) for i in range(len(completions))]


@pytest.mark.slow
def test_a_step_without_an_update_keeps_its_version_for_the_next_steps_stale_rows(ray_address, tiny_model_dir,
                                                                                problems_file, tmp_path,
                                                                                monkeypatch):
    import pipeline.rl.trainer

    monkeypatch.setattr(pipeline.rl.trainer, "make_pool", lambda *a, **k: CannedEngine())
    config = _config(tiny_model_dir, problems_file, tmp_path, "rl.max_staleness=1", "algorithm.preset=dapo",
                     "algorithm.max_num_gen_batches=2", "reward.terms=[{name: async_uniform_at_step_1}]")
    stages.rl.run(config)
    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert "train/loss" not in records[1]  # step 1 found no group with signal: no update
    # step 2 trains on the batch submitted during step 1 (version 1: the weights step 1 left unchanged)
    assert records[2]["async/staleness_1"] > 0 and records[2]["async/logp_old_source"] == "learner_adapter"


@pytest.mark.slow
@pytest.mark.parametrize("max_staleness", [1, 2])
def test_the_final_record_rolls_out_the_final_policy(ray_address, tiny_model_dir, problems_file, tmp_path,
                                                     monkeypatch, max_staleness):
    """Record s = rl.steps (an evaluation due there) holds one rollout of the final weights, not a
    batch submitted ahead under older ones (docs/design.md, "One RL step")."""
    import pipeline.rl.trainer

    monkeypatch.setattr(pipeline.rl.trainer, "make_pool", lambda *a, **k: CannedEngine())
    config = _config(tiny_model_dir, problems_file, tmp_path, f"rl.max_staleness={max_staleness}",
                     "rl.eval_every=3", "rl.eval_problems=2", "rl.eval_samples=1",
                     "reward.terms=[{name: async_alternating}]")
    stages.rl.run(config)
    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    events = read_events(tmp_path / "rl")
    assert [r["step"] for r in records] == [0, 1, 2, 3] and "eval/accuracy" in records[3]
    assert records[3]["async/staleness_0"] == PROMPTS_PER_STEP and "train/loss" not in records[3]
    final = [e for e in events if e["event"] == "batch_collected" and e["step"] == 3]
    assert [(e["version"], e["staleness"]) for e in final] == [(3, 0)]
    _account(records, events, 3)


@pytest.mark.slow
def test_kill_and_resume_at_max_staleness_1_draws_the_batches_in_flight_again(ray_address, tiny_model_dir,
                                                                              problems_file, tmp_path, monkeypatch,
                                                                              run_killed_at_step):
    import pipeline.rl.trainer

    monkeypatch.setattr(pipeline.rl.trainer, "make_pool", lambda *a, **k: CannedEngine())
    overrides = ["rl.max_staleness=1", "rl.save_every=1", "reward.terms=[{name: async_alternating}]"]
    config = _config(tiny_model_dir, problems_file, tmp_path, *overrides, "rl.steps=4")
    run_killed_at_step(config, 2)
    killed = read_events(tmp_path / "rl")
    stages.rl.run(config, resume=True)

    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]  # eval_every=0: no final record
    events = read_events(tmp_path / "rl")
    resumed_at = next(i for i, e in enumerate(events) if e["event"] == "resumed")
    assert events[resumed_at]["step"] == 2
    before, after = events[:resumed_at], events[resumed_at:]
    assert before == killed[: len(before)]
    # the killed run trained batches 0 and 1 and had batch 2 in flight when it died: the resumed
    # run draws batch 2 again from the same stream position, with its current weights
    trained = [e["batches"] for e in events if e["event"] == "update_started"]
    assert trained == [[0], [1], [2], [3]]
    submitted = {e["batch"]: e for e in before if e["event"] == "generate_submitted"}
    again = [e for e in after if e["event"] == "generate_submitted"]
    assert again[0]["batch"] == 2
    assert (again[0]["epoch"], again[0]["position"]) == (submitted[2]["epoch"], submitted[2]["position"])
    assert again[0]["version"] == 2
    positions = [(e["epoch"], e["position"]) for e in sorted(submitted.values(), key=lambda e: e["batch"])[:2]] + [
        (e["epoch"], e["position"]) for e in again]
    assert positions == [(0, PROMPTS_PER_STEP * b) for b in range(len(positions))]  # no prompt skipped or repeated
    staleness = [e["staleness"] for e in events if e["event"] == "batch_collected"]
    assert max(staleness) <= 1
    assert records[-1]["async/dropped_groups_total"] == 0


# ------------------------------------------------------------------ on a Ray rollout worker


@pytest.mark.slow
def test_one_step_off_policy_on_a_ray_worker(ray_address, tiny_model_dir, problems_file, tmp_path):
    config = _config(tiny_model_dir, problems_file, tmp_path, f"cluster.address={ray_address}",
                     "cluster.cpus_per_rollout_worker=0.5", "rl.max_staleness=1", "rollout.engine=hf",
                     "rollout.temperature=1.0", "rl.lr=1e-2", "rl.eval_every=2", "rl.eval_problems=2",
                     "rl.eval_samples=2", "reward.terms=[{name: async_alternating}]")
    result = stages.rl.run(config)
    assert result["output"].endswith("final/adapter")
    records = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    events = read_events(tmp_path / "rl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    # no trained group more than one version old; after the first step, every one is; the final
    # policy's record (step 3, no update) rolls out the final weights
    assert [(r["async/staleness_0"], r["async/staleness_1"]) for r in records] == [
        (PROMPTS_PER_STEP, 0), (0, PROMPTS_PER_STEP), (0, PROMPTS_PER_STEP), (PROMPTS_PER_STEP, 0)]
    assert [r["async/logp_old_source"] for r in records[:3]] == ["learner", "learner_adapter", "learner_adapter"]
    assert [r["weights/version"] for r in records[:3]] == [1, 2, 3]
    assert "eval/accuracy" in records[0] and "eval/accuracy" in records[2]
    # the generation of the batch step s + 1 trains on started before step s's update finished
    for step in range(2):
        batch = records[step + 1]["async/batches"][0]
        order = [(e["event"], e.get("batch", e.get("step"))) for e in events]
        assert order.index(("generate_started", batch)) < order.index(("update_finished", step))
    published = [(e["version"], e["eager"]) for e in events if e["event"] == "weights_published"]
    assert published == [(0, True), (1, False), (2, True), (3, True)]  # eager before an evaluation (and at the start)
    _account(records, events, steps=3)
    for record in records[:3]:
        assert record["idle/learner_waiting_rollouts_s"] >= 0 and "idle/rollout_waiting_weights_s" in record
