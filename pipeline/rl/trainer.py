"""The RL loop (docs/design.md, "One RL step"). Each step reads one way:

    groups = sample_groups(...)                      # queue.next + reward, dynamic sampling (§8)
    batch = build_batch(...)                         # immutable RolloutBatch
    scores = learner.score(batch)                    # logp_old, logp_ref, V_old
    advantages = compute_advantages(algo, inputs)    # a pure function (§1)
    stats = learner.update(batch, scores, advantages)
    engine.update_weights(learner.model, s + 1)      # the next step samples the new policy

The policy after step `s` is weight version `s`. Rollouts come from a `RolloutQueue`: at
`rl.max_staleness` 0 each draw submits a batch with the current weights and collects it at once;
at k > 0 up to 1 + k batches are in flight while the learner trains, and the weights are only
published (docs/design.md, "Asynchronous RL"). Record `s` of metrics.jsonl describes step `s`
(s = 0 .. rl.steps): the rollout batch it trains on (reward, length, ..., sampled by the policy
after `s - staleness` updates) and, when due, the held-out evaluation of the policy after `s`
updates; records 0 .. steps-1 also carry the statistics of the update their rollouts fed.
`rl/events.jsonl` (pipeline/rl/events.py) logs when each batch and update started and ended.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import rewards
from pipeline.algorithms.advantages import AdvantageInputs, compute_advantages, has_signal
from pipeline.cluster import RayRuntime, RolloutPool, make_pool
from pipeline.learner.batch import RolloutBatch, build_batch
from pipeline.core.checkpoint import checkpoint_run, latest_checkpoint, load_state, new_run_id, save_final
from pipeline.config import Config, save_config
from pipeline.data.problems import load_problems_for
from pipeline.eval.evaluation import evaluate_problems
from pipeline.cluster.colocate import UpdateSleep
from pipeline.cluster.learner_group import make_learner
from pipeline.core.models import load_tokenizer, prepare_model, resolve_device
from pipeline.data.prompts import PromptStream, encode_prompts, filter_long_prompts
from pipeline.rl.events import EventLog
from pipeline.rl.reward_checks import finite_samples
from pipeline.rl.rollout_queue import RolloutQueue
from pipeline.rollout import SamplingSettings, SyncCheck, make_engine
from pipeline.core.tracking import MetricsWriter, console_line, plot_metrics, timed

log = logging.getLogger(__name__)


@dataclass
class Group:
    """G completions of one prompt with their rewards."""

    prompt_ids: list[int]
    completions: list  # list[Completion]
    rewards: list[float]
    components: dict[str, list[float]] = field(default_factory=dict)
    valid: list[bool] | None = None
    """False for a sample whose reward was non-finite and masked (`reward.non_finite=mask`);
    None means all valid."""
    version: int = 0
    """The policy version that sampled the completions."""

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = [True] * len(self.rewards)

    @property
    def has_signal(self) -> bool:
        """§8: the valid rewards vary (`pipeline.algorithms.advantages.has_signal`, the advantages' own test)."""
        return bool(has_signal(torch.tensor(self.rewards, dtype=torch.float64), torch.tensor(self.valid)))


def sample_groups(draw: Callable[[], list[Group]], want: int, dynamic: bool,
                  max_batches: int) -> tuple[list[Group], list[Group], int]:
    """Groups for one update: `draw()` once, or with DAPO's dynamic sampling (§8) until `want`
    groups with reward variance are found or `max_batches` draws were made.

    Returns (the groups to train on, at most `want`; every group drawn; the number of draws).
    """
    kept: list[Group] = []
    seen: list[Group] = []
    for batches in range(1, max_batches + 1):
        groups = draw()
        seen += groups
        if not dynamic:
            return groups[:want], seen, batches
        kept += [g for g in groups if g.has_signal]
        if len(kept) >= want:
            break
    return kept[:want], seen, batches


class Trainer:
    def __init__(self, config: Config, resume: bool = False, engine=None):
        """`engine`: an already running RolloutEngine on the same base model (tests share one)."""
        self.config = config
        self.out = Path(config.output_dir) / "rl"
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(config, self.out / "config.yaml")
        self._seed(config.seed)
        self.device = resolve_device(config.device)
        self.model_path = str(prepare_model(config.model.name, config.model.cache_dir))
        self.tokenizer = load_tokenizer(self.model_path)
        data = config.data if config.rl.levels is None else config.data.model_copy(update={"levels": config.rl.levels})
        self.train = filter_long_prompts(self.tokenizer, load_problems_for(data, "train", config.seed),
                                         config.data.system_prompt, config.data.max_prompt_tokens)
        self.test = filter_long_prompts(self.tokenizer, load_problems_for(data, "test", config.seed),
                                        config.data.system_prompt, config.data.max_prompt_tokens
                                        )[: config.rl.eval_problems]
        self.stream = PromptStream(self.train, config.rl.prompts_per_step, config.seed)
        # before the model loads: a reward may refuse to start (the code sandbox's isolation)
        self.scorer = rewards.RewardScorer(config.reward.terms, workers=config.reward.workers,
                                           timeout=config.reward.timeout,
                                           max_tokens=config.rollout.max_tokens)
        updates = config.rl.steps * config.rl.ppo_epochs * (
            config.rl.prompts_per_step * config.rl.group_size // config.rl.mini_batch_size)
        self.ray = RayRuntime.start(config)  # None: one process, no Ray (docs/design.md, "Scaling out")
        bundles = self.ray.bundles if self.ray is not None else None  # cluster.colocate: one per GPU
        self.learner = make_learner(config, self.model_path, self.device, updates, bundles)
        if engine is None and config.uses_pool:
            engine = make_pool(config, self.model_path, policy=self.learner.model, bundles=bundles)
        self.engine = engine or make_engine(config.rollout, self.model_path, device=self.device,
                                            policy=self.learner.model, sleep_mode=config.cluster.colocate)
        self.update_sleep = UpdateSleep(self.engine, config.cluster.colocate)  # colocated: asleep in updates
        self.sampling = SamplingSettings.from_config(config.rollout, n=config.rl.group_size)
        self.sync_check = SyncCheck.build(self.tokenizer, encode_prompts(
            self.tokenizer, self.train[:1], config.data.system_prompt, config.data.max_prompt_tokens)[0],
            config.rollout.sync_check_every)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.run_id = new_run_id()  # a resumed run keeps its checkpoint's id: pruning keys on it
        self.final: Path | None = None  # rl/final/adapter (or rl/final/model) once the run ended
        self.events = EventLog(self.out, resume=resume)
        self.queue = RolloutQueue(self.engine, self.stream, self._encode, self.sampling,
                                  max_staleness=config.rl.max_staleness, last_version=config.rl.steps - 1,
                                  events=self.events)
        if resume and (ckpt := latest_checkpoint(self.out)) is not None:
            self._resume(ckpt)
        self._sync_weights(self.step, eager=True)
        self.metrics = MetricsWriter(self.out, resume_from_step=self.step - 1 if resume else None)

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    # ------------------------------------------------------------------ one step

    def rollout(self) -> tuple[list[Group], dict[str, Any]]:
        """This step's groups (§8) and the statistics of every group drawn for it."""
        record: dict[str, Any] = {"time/generate": 0.0, "time/reward": 0.0, "rollout/generate_s": 0.0,
                                  "async/batches": []}
        algo = self.config.algorithm
        dropped = self.queue.dropped
        groups, seen, batches = sample_groups(lambda: self._draw(record), self.config.rl.prompts_per_step,
                                              algo.dynamic_sampling, algo.max_num_gen_batches)
        record.update({"sampling/gen_batches": batches, "sampling/kept_groups": len(groups),
                       "sampling/signal_frac": sum(g.has_signal for g in seen) / len(seen),
                       "async/dropped_groups": self.queue.dropped - dropped,
                       "async/dropped_groups_total": self.queue.dropped})
        staleness = [self.step - g.version for g in groups]
        record.update({f"async/staleness_{k}": staleness.count(k)
                       for k in range(self.config.rl.max_staleness + 1)})
        return groups, {**record, **self._rollout_stats(seen)}

    def _draw(self, record: dict[str, Any]) -> list[Group]:
        """The next batch from the rollout queue (G completions per prompt), scored. `time/generate`:
        how long this waited for it; `rollout/generate_s`: how long the engine generated it."""
        with timed(record, "generate"):
            rollout = self.queue.next(self.step)
        record["rollout/generate_s"] += rollout.seconds
        record["async/batches"].append(rollout.batch)
        with timed(record, "reward"):
            return self._score(rollout.problems, rollout.prompt_ids, rollout.groups, rollout.version)

    def _encode(self, problems) -> list[list[int]]:
        return encode_prompts(self.tokenizer, problems, self.config.data.system_prompt,
                              self.config.data.max_prompt_tokens)

    def _score(self, problems, prompt_ids, outputs, version: int) -> list[Group]:
        """Reward each completion, called TRL's way (docs/rewards.md, "The calling convention"):
        conversational problems give message lists as `prompts` and `completions`."""
        G = self.config.rl.group_size
        flat = [c for group in outputs for c in group]
        rows = [p for p in problems for _ in range(G)]
        columns: dict[str, Any] = {k: [p.extra.get(k) for p in rows] for k in {k for p in problems for k in p.extra}}
        prompts = [p.messages or self.tokenizer.decode(ids) for p, ids in zip(problems, prompt_ids)]
        columns.update({
            "prompts": [prompt for prompt in prompts for _ in range(G)],
            "completion_ids": [list(c.token_ids) for c in flat],
            "problem": [p.problem for p in rows],
            "answer": [p.answer for p in rows],
            "solution": [p.solution for p in rows],
            "lengths": [len(c.token_ids) for c in flat],
            "truncated": [c.truncated for c in flat],
            "trainer_state": rewards.TrainerState(global_step=self.step, max_steps=self.config.rl.steps),
            "step": self.step,
        })
        completions = [[{"role": "assistant", "content": c.text}] if p.messages else c.text for p, c in zip(rows, flat)]
        result = self.scorer(completions, **columns)
        valid = finite_samples(result.total, result.components, G, self.config.reward.non_finite)
        groups = []
        for i, (ids, group) in enumerate(zip(prompt_ids, outputs)):
            part = slice(i * G, (i + 1) * G)
            comps = {name: values[part] for name, values in result.components.items()}
            groups.append(Group(ids, group, result.total[part], comps, valid[part], version))
        return groups

    def _rollout_stats(self, groups: list[Group]) -> dict[str, float]:
        rewards_ = [r for g in groups for r, ok in zip(g.rewards, g.valid) if ok] or [float("nan")]
        lengths = [len(c.token_ids) for g in groups for c in g.completions]
        stats = {
            "reward/mean": float(np.mean(rewards_)),
            "reward/std": float(np.std(rewards_)),
            "response_length/mean": float(np.mean(lengths)),
            "response_length/max": int(max(lengths)),
            "truncation_rate": float(np.mean([c.truncated for g in groups for c in g.completions])),
            "reward/non_finite": sum(not ok for g in groups for ok in g.valid),
        }
        components = {name: [v for g in groups for v, ok in zip(g.components[name], g.valid) if ok]
                      for name in groups[0].components}
        stats.update(rewards.component_stats(components))
        if accuracy := [v for v in components.get("accuracy", []) if v is not None]:
            stats["accuracy/mean"] = float(np.mean([v > 0 for v in accuracy]))
        return stats

    def build_batch(self, groups: list[Group]) -> RolloutBatch:
        completions = [c for g in groups for c in g.completions]
        return build_batch([g.prompt_ids for g in groups for _ in g.completions],
                           [c.token_ids for c in completions], [c.logprobs for c in completions],
                           [r for g in groups for r in g.rewards], [ok for g in groups for ok in g.valid],
                           [c.truncated for c in completions], self.config.rl.group_size,
                           self.tokenizer.pad_token_id, self.config.algorithm.overlong_filter,
                           versions=[g.version for g in groups for _ in g.completions], policy_version=self.step)

    def train_step(self) -> dict[str, Any]:
        """One step, rollout to weight sync; returns its record (final metric names)."""
        record: dict[str, Any] = {}
        with timed(record, "step"):
            groups, rollout_record = self.rollout()
            record.update(rollout_record)
            record["idle/learner_waiting_rollouts_s"] = record["time/generate"] + record["time/reward"]
            if self.config.rl.max_staleness:  # the behaviour policy of the rows this version samples
                self.learner.keep_version(self.step, self.config.rl.max_staleness)
            if not groups:
                log.warning("step %d: no group had reward variance; skipping the update", self.step)
                return record
            batch = self.build_batch(groups)
            self.update_sleep.before_update()
            self.events.emit("update_started", step=self.step, batches=record["async/batches"])
            with timed(record, "learn"):
                scores = self.learner.score(batch)
                record["async/logp_old_source"] = scores.logp_old_source
                logp = scores.logp_old if scores.logp_old is not None else batch.logp_engine
                advantages = compute_advantages(self.config.algorithm, AdvantageInputs(
                    rewards=batch.rewards, group_size=batch.group_size, mask=batch.loss_mask, valid=batch.valid,
                    logp=logp, logp_ref=scores.logp_ref, values=scores.values))
                self.metrics.log_completions(self.step, groups, advantages.advantages, self.tokenizer,
                                             self.config.rl.log_completions)
                record.update(self.learner.update(batch, scores, advantages, self.shuffle))
            self.events.emit("update_finished", step=self.step)
            with timed(record, "sync"):
                check = self.sync_check.due(self.step + 1)  # after the (step + 1)-th update
                eager = not self.config.rl.max_staleness or check or self._eval_due(self.step + 1)
                record["weights/version"] = self._sync_weights(self.step + 1, eager)
                self.update_sleep.after_sync()
                if check:
                    record.update(self.sync_check(self.engine, self.learner.model, self.tokenizer, self.step))
            if isinstance(self.engine, RolloutPool):
                record.update(self.engine.metrics())  # per worker: tokens/s, time, version, idle
            tokens = sum(len(c.token_ids) for g in groups for c in g.completions)
            record["perf/tokens_per_s"] = tokens / max(record["rollout/generate_s"], 1e-9)
        return record

    def _sync_weights(self, version: int, eager: bool) -> int:
        """Serve the learner's weights as `version` (the policy after `version` updates). Eager:
        every engine has loaded them when this returns (the synchronous step, evaluations, sync
        checks); else a pool only publishes them for the generations submitted next
        (docs/design.md, "Asynchronous RL"). Returns the version."""
        if eager or not isinstance(self.engine, RolloutPool):
            version = self.engine.update_weights(self.learner.model, version)
        else:
            version = self.engine.publish_weights(self.learner.model, version)
        self.events.emit("weights_published", version=version, eager=eager)
        return version

    def evaluate(self) -> dict[str, float]:
        rl = self.config.rl
        report = evaluate_problems(
            self.engine, self.tokenizer, self.test, system_prompt=self.config.data.system_prompt,
            n=rl.eval_samples, temperature=rl.eval_temperature, top_p=rl.eval_top_p,
            max_tokens=self.config.rollout.max_tokens, max_prompt_tokens=self.config.data.max_prompt_tokens,
            stop=self.config.rollout.stop, extract=self.config.reward.answer_extraction,
            timeout=self.config.reward.timeout, workers=self.config.reward.workers,
        )
        keys = ("accuracy", "mean_length", "truncation_rate")
        return {**{f"eval/{k}": report.summary[k] for k in keys if k in report.summary},
                "eval/accuracy_stderr": report.summary["stderr"]["accuracy"]}

    def _eval_due(self, step: int) -> bool:
        every = self.config.rl.eval_every
        return every > 0 and (step % every == 0 or step == self.config.rl.steps)

    def _last_rollout(self) -> int:
        """The last step that rolls out: rl.steps - 1, or rl.steps itself when an evaluation is due there
        (the final policy's record, docs/design.md "One RL step"); the rollout queue submits nothing later."""
        steps = self.config.rl.steps
        return steps if self._eval_due(steps) else steps - 1

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, Any]:
        """Train to rl.steps (from a resumed step), save the final weights; the last record."""
        rl = self.config.rl
        last: dict[str, Any] = {}
        run_info = self.scorer.run_info()  # e.g. sandbox/level, in the first record
        # the bar closes however the loop ends: a stop's last line (stages/common.py) stays last
        with tqdm(total=rl.steps, initial=self.step, desc="rl", unit="step", dynamic_ncols=True) as bar:
            while self.step <= rl.steps:
                if self.step > self._last_rollout():
                    break
                record: dict[str, Any] = {"step": self.step, **run_info}
                run_info = {}
                self._seed(self.config.seed * 1_000_003 + self.step)  # a resumed step samples the same
                if self._eval_due(self.step):  # before this step's update: the policy after `step` updates
                    with timed(record, "eval"):
                        record.update(self.evaluate())
                record.update(self.train_step() if self.step < rl.steps else self.rollout()[1])
                self.metrics.write(record)
                bar.write(console_line(record))
                last.update(record)
                if self.step == rl.steps:
                    break
                self.step += 1
                bar.update(1)
                if (rl.save_every and self.step % rl.save_every == 0) or self.step == rl.steps:
                    self.save()
        self.final = save_final(self.out, self.learner.model, self.tokenizer)
        self.metrics.close()
        plot_metrics(self.out / "metrics.jsonl", self.out)
        return last

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        state = {**self.queue.state_dict(), "shuffle": self.shuffle.get_state()}  # in-flight batches: drawn again
        return self.learner.save_checkpoint(self.out, self.step, state, keep=self.config.rl.keep_checkpoints,
                                            run_id=self.run_id, tokenizer=self.tokenizer)

    def _resume(self, checkpoint: Path) -> None:
        state = load_state(checkpoint)
        self.learner.load_state_dict(state["learner"], str(checkpoint / "adapter"))
        self.queue.load_state_dict(state)
        self.shuffle.set_state(state["shuffle"])
        self.step = state["step"]
        self.run_id = checkpoint_run(checkpoint) or self.run_id
        self.events.emit("resumed", step=self.step)
        log.info("resumed from %s at step %d", checkpoint, self.step)

    def close(self) -> None:
        self.engine.close()
        self.scorer.close()
        self.learner.close()
        self.events.close()
        if self.ray is not None:
            self.ray.close()

