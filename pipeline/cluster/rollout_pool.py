"""Rollout workers on Ray behind the `RolloutEngine` protocol (docs/design.md, "Scaling out").

    pool = make_pool(config, model_path, policy=learner.model)  # a RolloutPool of cluster.rollout_workers
    pool.update_weights(learner.model, version)  # one ray.put; every worker acknowledges the version
    groups = pool.generate(prompts, sampling)    # whole groups per worker, back in prompt order
    handle = pool.submit(prompts, sampling)      # asynchronous RL: returns while the workers generate
    pool.publish_weights(learner.model, version + 1)  # no waiting; the next submit carries them
    generation = pool.collect(handle)            # groups + the version that sampled them
    record.update(pool.metrics())                # per worker: tokens/s, generation time, version, idle

Each worker is a Ray actor (`RolloutWorker`, pipeline/cluster/rollout_worker.py) that builds its
own engine (`EngineSpec.build`, HF or vLLM) in its own process. Weights travel once per update
through Ray's object store (`ray.put` of a `WeightsPayload`). `update_weights` has each worker load
them and answer with its version.
`publish_weights` only puts them (docs/design.md, "Asynchronous RL"): Ray runs one caller's calls to
an actor in submission order, so each later `generate` call carries the payload's reference and
the worker loads it first when it serves another version; generations already queued keep the
version they were submitted with. A worker asked to generate with any other version than the one
it serves refuses (`StaleWeights`), and the pool checks the version each worker reports, so no
completion is ever sampled from other weights than those asked for at submission.

Faults: a worker whose call fails because its process died, or that has not answered within
`cluster.rollout_timeout_s` of the pool starting to wait for it (it is then killed with
`ray.kill(no_restart=False)`), is restarted by Ray (`max_restarts`), loads the current weights
from the object store, and the same call (its shard of the same groups, with the version it asked
for) is made again. A second failure of that call, or a worker that does not come back within
`RESTART_TIMEOUT_S`, raises `RolloutWorkerError`.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from pipeline.cluster.placement import Bundles
from pipeline.cluster.rollout_worker import EngineBuilder, EngineSpec, RolloutWorker, StaleWeights
from pipeline.config import ClusterConfig, Config, ConfigError
from pipeline.rollout.base import Completion, Generation, SamplingSettings, SyncMode
from pipeline.rollout.factory import resolve_sync
from pipeline.rollout.weights import weights_payload

log = logging.getLogger(__name__)

MAX_RESTARTS = 8
"""Ray restarts of one rollout worker over a run before its failure ends the run."""
RESTART_TIMEOUT_S = 900.0
"""How long a restarted worker may take to rebuild its engine and load the weights (vLLM: minutes)."""
RECOVERY_TRIES = 5
"""Failed calls to a restarted worker before it counts as gone (calls that reached the dying
process fail; calls while Ray rebuilds it are repeated until `RESTART_TIMEOUT_S`)."""


class RolloutWorkerError(RuntimeError):
    """A rollout worker failed the same call twice, ran out of restarts, or did not come back."""


def shard_groups(costs: list[float], workers: int) -> list[list[int]]:
    """Whole groups per worker, balanced by cost: each group, most expensive first, goes to the
    least loaded worker (LPT scheduling). Returns each worker's group indices in ascending order
    (empty lists for workers left without a group)."""
    shards: list[list[int]] = [[] for _ in range(workers)]
    load = [(0.0, w) for w in range(workers)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        total, worker = heapq.heappop(load)
        shards[worker].append(index)
        heapq.heappush(load, (total + costs[index], worker))
    return [sorted(shard) for shard in shards]


@dataclass
class PoolHandle:
    """A generation in flight on the pool's workers (`RolloutPool.submit`)."""

    version: int
    """The weight version every worker must sample it with."""
    prompts: int
    shards: list[list[int]]
    """Each worker's prompt indices."""
    calls: dict[int, tuple[str, tuple]]
    """worker -> (method, args): what is made again on a restarted worker."""
    pending: dict[ray.ObjectRef, tuple[int, int]]
    """The calls' results: reference -> (worker, attempt)."""


class RolloutPool:
    """`cluster.rollout_workers` engines as Ray actors, one `RolloutEngine` to the trainer."""

    def __init__(self, builder: EngineBuilder, cluster: ClusterConfig, *, sync: SyncMode,
                 bundles: Bundles | None = None) -> None:
        """`sync`: the payload the engines load (`resolve_sync` for the policy and the workers'
        device); `bundles`: worker i runs in bundle i (`cluster.colocate`). Starts the actors and
        waits until each engine is built; ConfigError when the Ray cluster has fewer CPUs or
        GPUs than the workers ask for (they would wait forever)."""
        have = ray.cluster_resources()
        for unit, each in (("CPU", cluster.cpus_per_rollout_worker), ("GPU", cluster.gpus_per_rollout_worker)):
            if cluster.rollout_workers * each > have.get(unit, 0.0):
                raise ConfigError(f"cluster.rollout_workers: {cluster.rollout_workers} workers x {each:g} {unit} "
                                  f"need more than the Ray cluster's {have.get(unit, 0.0):g} {unit}s")
        worker = ray.remote(RolloutWorker)
        options = dict(num_cpus=cluster.cpus_per_rollout_worker, num_gpus=cluster.gpus_per_rollout_worker,
                       max_restarts=MAX_RESTARTS, max_task_retries=0)
        placed = [{} if bundles is None else {"scheduling_strategy": bundles.strategy(i)}
                  for i in range(cluster.rollout_workers)]
        self.workers = [worker.options(**options, **placed[i]).remote(builder, i)
                        for i in range(cluster.rollout_workers)]
        self.sync = sync
        self.timeout_s = cluster.rollout_timeout_s
        self.version = 0
        self.restarts = 0
        self.timeouts = 0
        self._payload: ray.ObjectRef | None = None
        self._expected_completion = None  # mean completion length seen so far (the balance's estimate)
        self.worker_version = [0] * len(self.workers)
        """The version each worker acknowledged or generated with, as last reported."""
        self._record: dict[str, float] = {}
        self.dtype: torch.dtype = ray.get([w.dtype.remote() for w in self.workers],
                                                 timeout=RESTART_TIMEOUT_S)[0]

    # ------------------------------------------------------------------ the protocol

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order, from the current version (`submit`
        then `collect`)."""
        return self.collect(self.submit(prompts, sampling)).groups

    def submit(self, prompts: list[list[int]], sampling: SamplingSettings) -> PoolHandle:
        """Start generating with the current version and return at once. Each worker gets whole
        groups, balanced by expected tokens (prompt plus the mean completion length so far); its
        call carries the current payload's reference (see the module docstring)."""
        completion = self._expected_completion or sampling.max_tokens
        shards = shard_groups([sampling.n * (len(p) + completion) for p in prompts], len(self.workers))
        carried = None if self._payload is None else [self._payload]
        calls = {w: ("generate", ([prompts[i] for i in shard], sampling, self.version, carried))
                 for w, shard in enumerate(shards) if shard}
        return PoolHandle(self.version, len(prompts), shards, calls, self._start(calls))

    def collect(self, handle: PoolHandle) -> Generation:
        """Wait for `handle`'s groups (in prompt order); StaleWeights if a worker reports another
        version than the handle's. `started`/`finished`: the first worker's start, the last one's end."""
        out: list[list[Completion] | None] = [None] * handle.prompts
        started, finished = [], []
        for w, (groups, stats) in self._wait(handle.calls, handle.pending).items():
            if stats["version"] != handle.version:
                raise StaleWeights(f"rollout worker {w} generated with version {stats['version']}, "
                                   f"asked for {handle.version}")
            for index, group in zip(handle.shards[w], groups):
                out[index] = group
            self._add(f"rollout/worker{w}/tokens", stats["tokens"])
            self._add(f"rollout/worker{w}/generate_s", stats["seconds"])
            self._add(f"rollout/worker{w}/idle_s", stats["idle"])
            self.worker_version[w] = stats["version"]
            started.append(stats["started"])
            finished.append(stats["finished"])
        lengths = [len(c.token_ids) for group in out for c in group]
        self._expected_completion = sum(lengths) / max(1, len(lengths))
        return Generation(out, handle.version, min(started), max(finished))  # type: ignore[arg-type]

    def publish_weights(self, model, version: int) -> int:
        """Put `version`'s weights into the object store once and return at once: generations
        submitted from now on carry them; those in flight keep their version. Returns `version`."""
        self._payload = ray.put(weights_payload(model, self.sync, self.dtype, version))
        self.version = version
        return version

    def update_weights(self, model, version: int | None = None) -> int:
        """`publish_weights`, then every worker loads them (after what it has queued) and must
        answer with the new version (StaleWeights otherwise). `version` None: the current + 1.
        Returns the new version."""
        version = self.publish_weights(model, self.version + 1 if version is None else version)
        acks = self._call({w: ("load_weights", (self._payload,)) for w in range(len(self.workers))})
        for w, acknowledged in acks.items():
            self.worker_version[w] = acknowledged
        if stale := {w: v for w, v in acks.items() if v != version}:
            raise StaleWeights(f"rollout workers {stale} did not acknowledge version {version}")
        return version

    def prompt_logprobs(self, prompt_ids: list[int], completion_ids: list[int],
                        temperature: float = 1.0) -> list[float]:
        """Worker 0's log-probs of a fixed completion; `worker_logprobs` has every worker's."""
        return self.worker_logprobs(prompt_ids, completion_ids, temperature)[0]

    def worker_logprobs(self, prompt_ids: list[int], completion_ids: list[int],
                        temperature: float = 1.0) -> list[list[float]]:
        """Every worker's log-probs of a fixed completion (the sync check covers each one)."""
        results = self._call({w: ("prompt_logprobs", (prompt_ids, completion_ids, temperature))
                              for w in range(len(self.workers))})
        return [results[w] for w in range(len(self.workers))]

    def sleep(self) -> None:
        """Every worker's engine frees its GPU memory (colocated: during the learner's update);
        it still loads pushed weights. `pipeline.cluster.colocate.UpdateSleep` decides when."""
        self._call({w: ("sleep", ()) for w in range(len(self.workers))})

    def wake_up(self) -> None:
        """Every worker's engine takes its memory back, ready to generate."""
        self._call({w: ("wake_up", ()) for w in range(len(self.workers))})

    def worker_versions(self) -> list[int]:
        """The weight version each worker serves now (asked of each one)."""
        results = self._call({w: ("version", ()) for w in range(len(self.workers))})
        return [results[w] for w in range(len(self.workers))]

    def close(self) -> None:
        """Close each engine, then end the actors."""
        for worker in self.workers:
            try:
                ray.get(worker.close.remote(), timeout=60)
            except (RayActorError, GetTimeoutError):
                pass  # a worker that cannot close is killed below all the same
            ray.kill(worker)
        self.workers = []

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, float]:
        """Since the last call: per worker tokens/s, generation seconds, version served and idle
        seconds (between the end of one of its generations and the start of the next, on its own
        clock: waiting for the next weights and request), their mean over the workers as
        `idle/rollout_waiting_weights_s`, and the pool's restarts and timeouts so far."""
        record = dict(self._record)
        for w in range(len(self.workers)):
            if (tokens := record.pop(f"rollout/worker{w}/tokens", None)) is not None:
                record[f"rollout/worker{w}/tokens_per_s"] = tokens / max(record[f"rollout/worker{w}/generate_s"], 1e-9)
            record[f"rollout/worker{w}/version"] = self.worker_version[w]
        waits = [v for k, v in record.items() if k.endswith("/idle_s")]
        if waits:
            record["idle/rollout_waiting_weights_s"] = sum(waits) / len(waits)
        record.update({"rollout/restarts": self.restarts, "rollout/timeouts": self.timeouts})
        self._record = {}
        return record

    def _add(self, key: str, value: float) -> None:
        self._record[key] = self._record.get(key, 0.0) + value

    # ------------------------------------------------------------------ calls that survive faults

    def _call(self, calls: dict[int, tuple[str, tuple]]) -> dict[int, Any]:
        """Run `method(*args)` on each listed worker concurrently; returns worker -> result (`_wait`)."""
        return self._wait(calls, self._start(calls))

    def _start(self, calls: dict[int, tuple[str, tuple]]) -> dict[ray.ObjectRef, tuple[int, int]]:
        """Submit each worker's call; returns reference -> (worker, attempt 0)."""
        return {getattr(self.workers[w], method).remote(*args): (w, 0) for w, (method, args) in calls.items()}

    def _wait(self, calls: dict[int, tuple[str, tuple]],
              submitted: dict[ray.ObjectRef, tuple[int, int]]) -> dict[int, Any]:
        """The results of `submitted` calls: worker -> result.

        A call whose worker died, or that has not answered within `timeout_s` of this wait's start
        (a call queued behind earlier ones on its worker starts counting here; the worker is then
        killed), is made again once on the restarted worker after it loaded the current weights.
        """
        now = time.monotonic()
        pending = {ref: (w, now, attempt) for ref, (w, attempt) in submitted.items()}

        def submit(w: int, attempt: int) -> None:
            method, args = calls[w]
            pending[getattr(self.workers[w], method).remote(*args)] = (w, time.monotonic(), attempt)

        results: dict[int, Any] = {}
        while pending:
            first_deadline = min(started for _, started, _ in pending.values()) + self.timeout_s
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, first_deadline - time.monotonic()))
            if ready:
                w, _, attempt = pending.pop(ready[0])
                try:
                    results[w] = ray.get(ready[0])
                except RayActorError as exc:
                    self._recover(w, attempt, f"died ({type(exc).__name__})")
                    submit(w, attempt + 1)
                continue
            for ref, (w, started, attempt) in list(pending.items()):
                if time.monotonic() - started >= self.timeout_s:
                    del pending[ref]
                    self.timeouts += 1
                    ray.kill(self.workers[w], no_restart=False)
                    self._recover(w, attempt, f"did not answer within cluster.rollout_timeout_s={self.timeout_s:g}")
                    submit(w, attempt + 1)
        return results

    def _recover(self, w: int, attempt: int, why: str) -> None:
        """Wait for Ray to restart worker `w` and give it the current weights; RolloutWorkerError
        if this call already failed once or the worker does not come back."""
        if attempt > 0:
            raise RolloutWorkerError(f"rollout worker {w} {why}, again after a restart; giving up")
        log.warning("rollout worker %d %s: restarting it with weights version %d", w, why, self.version)
        self.restarts += 1
        deadline, died = time.monotonic() + RESTART_TIMEOUT_S, 0
        while True:
            call = self.workers[w].version.remote() if self._payload is None \
                else self.workers[w].load_weights.remote(self._payload)
            try:
                self.worker_version[w] = ray.get(call, timeout=max(1.0, deadline - time.monotonic()))
                return
            except ActorUnavailableError:  # still restarting (building its engine)
                pass
            except RayActorError as exc:  # a call that reached the dying process, or out of restarts
                died += 1
                if died == RECOVERY_TRIES:
                    raise RolloutWorkerError(f"rollout worker {w} {why} and did not come back: {exc}") from exc
            except GetTimeoutError as exc:
                raise RolloutWorkerError(f"rollout worker {w} {why} and did not come back within "
                                         f"{RESTART_TIMEOUT_S:g}s") from exc
            if time.monotonic() > deadline:
                raise RolloutWorkerError(f"rollout worker {w} {why} and did not come back within "
                                         f"{RESTART_TIMEOUT_S:g}s")
            time.sleep(1.0)


def make_pool(config: Config, model_path: str, *, policy=None, version: int = 0,
              bundles: Bundles | None = None) -> RolloutPool:
    """`cluster.rollout_workers` workers building `config.rollout`'s engine on the device
    `gpus_per_rollout_worker` asks for (Ray must be up: `RayRuntime.start`; `Config.uses_pool`
    says when a run uses one), worker i in bundle i of `bundles` (colocated, with engines that can
    sleep); serves `policy` as `version` when given. The sync mode is resolved once, for the
    policy and the workers' device."""
    cluster = config.cluster
    device = "cuda" if cluster.gpus_per_rollout_worker > 0 else "cpu"
    sync = resolve_sync(config.rollout.sync, device, policy)
    spec = EngineSpec(model_path, config.rollout.model_copy(update={"sync": sync}), device, config.seed,
                      sleep_mode=cluster.colocate)
    pool = RolloutPool(spec, cluster, sync=sync, bundles=bundles)
    if policy is not None:
        pool.update_weights(policy, version)
    return pool
