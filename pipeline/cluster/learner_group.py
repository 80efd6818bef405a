"""The data-parallel learner on Ray (docs/design.md, "Scaling out").

`LearnerGroup` starts `cluster.learner_workers` ranks, each a Ray actor (`LearnerRank`) holding a
`pipeline.learner.learner.Learner`, placed by one placement group (its own, or with `cluster.colocate`
the run's colocated `Bundles`: rank i in bundle i, next to rollout worker i) and joined by torch.distributed
(gloo on CPU, NCCL on GPU, `timeout=cluster.collective_timeout_s`). It has the Learner's
interface as the trainer uses it, so the one-way step reads the same:

    scores = group.score(batch)               # each rank scores its share of the groups
    stats = group.update(batch, scores, advantages, generator)   # all ranks, one all-reduce per step
    engine.update_weights(group.model)        # a replica here, refreshed from rank 0 after each update

The batch goes through the object store once per step; every rank holds all of it and draws the
same shuffle order (pipeline/learner/data_parallel.py). Rank 0 writes checkpoints in one Learner's
format, so a run resumes with any number of ranks. A rank that dies (or a collective that times
out) stops the run with `LearnerRankError`: an update needs every rank, and the last checkpoint
is where `--resume` continues.
"""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist
from torch import Tensor

from pipeline.cluster.colocate import release_cached_memory
from pipeline.cluster.placement import Bundles
from pipeline.config import ClusterConfig, Config
from pipeline.core.models import load_policy, resolve_device
from pipeline.algorithms.advantages import Advantages
from pipeline.learner.batch import PolicyScores, RolloutBatch
from pipeline.learner.data_parallel import LearnerRankError
from pipeline.learner.learner import Learner

ACTOR_PREFIX = "rlvr-learner"
"""Ranks are named actors `<prefix>-<group id>-<rank>` (ray.util.list_named_actors finds them)."""


class LearnerRank:
    """One data-parallel rank (run as a Ray actor): a `Learner` in the group's process group."""

    def __init__(self, config: Config, model_path: str, total_updates: int, rank: int, world_size: int):
        self.config, self.model_path, self.total_updates = config, model_path, total_updates
        self.rank, self.world_size = rank, world_size
        self.learner: Learner | None = None

    def rendezvous(self) -> str:
        """`host:port` for the process group's TCP store: this node's address and a free port."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def join(self, rendezvous: str) -> None:
        """Join the process group, build the Learner (seeded like the single process) and take
        rank 0's trainable weights, so every replica starts equal."""
        config = self.config
        device = resolve_device(config.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://{rendezvous}",
                                rank=self.rank, world_size=self.world_size,
                                timeout=timedelta(seconds=config.cluster.collective_timeout_s))
        torch.manual_seed(config.seed)
        self.learner = Learner(config, self.model_path, device, self.total_updates, self.rank, self.world_size)
        for param in self.learner.params:
            dist.broadcast(param.data, src=0)

    def score(self, batch: RolloutBatch) -> PolicyScores:
        return self.learner.score(batch)

    def update(self, batch: RolloutBatch, scores: PolicyScores, advantages: Advantages,
               shuffle: Tensor) -> tuple[dict[str, float], Tensor]:
        """The update from shuffle state `shuffle`; returns its stats and the shuffle's next state."""
        generator = torch.Generator().set_state(shuffle)
        stats = self.learner.update(batch, scores, advantages, generator)
        if self.config.cluster.colocate:
            release_cached_memory()  # the engine sharing this GPU wakes next
        return stats, generator.get_state()

    def keep_version(self, version: int, keep: int) -> None:
        self.learner.keep_version(version, keep)

    def trainable_weights(self) -> dict[str, Tensor]:
        """The model's trained parameters by name (the LoRA matrices, or every weight), on CPU."""
        return {name: p.detach().cpu() for name, p in self.learner.model.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict, weights_dir: str | None) -> None:
        self.learner.load_state_dict(state, weights_dir)

    def save_checkpoint(self, root: Path, step: int, state: dict, options: dict[str, Any]) -> Path:
        return self.learner.save_checkpoint(root, step, state, **options)


_RemoteRank = ray.remote(max_restarts=0)(LearnerRank)


class LearnerGroup:
    """`cluster.learner_workers` data-parallel ranks behind the Learner's interface. Ray must be
    running (or is started locally by the first actor); the ranks stop on `close`."""

    def __init__(self, config: Config, model_path: str, device: torch.device, total_updates: int,
                 bundles: Bundles | None = None):
        """Place and start the ranks (rank i in bundle i of `bundles` when given, else in a PACK
        placement group of the group's own), join them, and load the replica `model` on `device`
        (what the engine syncs from and the final weights are saved from). Raises LearnerRankError
        when the cluster cannot place the ranks within `cluster.collective_timeout_s` or a rank
        fails to start."""
        cluster = config.cluster
        self.config = config
        self.world_size = cluster.learner_workers
        self.name = f"{ACTOR_PREFIX}-{uuid.uuid4().hex[:8]}"
        self.placement = None
        self.ranks: list = []
        if bundles is None:
            bundles = self._own_placement(cluster)
        self.ranks = [
            _RemoteRank.options(
                name=f"{self.name}-{rank}", num_cpus=cluster.cpus_per_learner_worker,
                num_gpus=cluster.gpus_per_learner_worker, scheduling_strategy=bundles.strategy(rank),
            ).remote(config, model_path, total_updates, rank, self.world_size)
            for rank in range(self.world_size)]
        self._call("join", self._call("rendezvous", ranks=[0])[0])
        self.model = load_policy(model_path, config.lora, config.model.adapter, config.model.dtype, device).eval()
        self._pull_weights()
        self._sent: tuple[RolloutBatch, ray.ObjectRef] | None = None

    def _own_placement(self, cluster: ClusterConfig) -> Bundles:
        """A placement group of the ranks alone (`self.placement`, freed on `close`)."""
        bundle = {"CPU": cluster.cpus_per_learner_worker}
        if cluster.gpus_per_learner_worker:
            bundle["GPU"] = cluster.gpus_per_learner_worker
        self.placement = Bundles.place([bundle] * self.world_size, cluster.collective_timeout_s)
        if self.placement is None:
            raise LearnerRankError(
                f"cluster.learner_workers={self.world_size}: Ray could not place {self.world_size} ranks of "
                f"{bundle} within cluster.collective_timeout_s={cluster.collective_timeout_s:g}s "
                f"(available: {ray.available_resources()})")
        return self.placement

    # ------------------------------------------------------------------ calls on the ranks

    def _call(self, method: str, *args: Any, ranks: list[int] | None = None) -> list[Any]:
        """`method(*args)` on `ranks` (all by default); the results in rank order. The first rank
        to fail stops the group: LearnerRankError names it, the method and Ray's reason."""
        ranks = list(range(self.world_size)) if ranks is None else ranks
        refs = [getattr(self.ranks[r], method).remote(*args) for r in ranks]
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayError as exc:
                rank = ranks[refs.index(done[0])]
                self.close()
                reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
                raise LearnerRankError(
                    f"learner rank {rank} of {self.world_size} failed in {method} ({type(exc).__name__}: "
                    f"{reason[:300]}); the run stops, an update needs every rank: continue from the "
                    "last checkpoint with --resume") from exc
        return ray.get(refs)

    def _put(self, batch: RolloutBatch) -> ray.ObjectRef:
        """`batch` in the object store, put once for the step's score and update."""
        if self._sent is None or self._sent[0] is not batch:
            self._sent = (batch, ray.put(batch))
        return self._sent[1]

    @torch.no_grad()
    def _pull_weights(self) -> None:
        """Copy rank 0's trained parameters into the replica `model`."""
        params = dict(self.model.named_parameters())
        for name, value in self._call("trainable_weights", ranks=[0])[0].items():
            params[name].copy_(value)

    # ------------------------------------------------------------------ the Learner's interface

    def score(self, batch: RolloutBatch) -> PolicyScores:
        """`Learner.score` of `batch`: each rank scores its share of the groups ([B, T] each)."""
        parts = self._call("score", self._put(batch))

        def total(name: str) -> Tensor | None:  # each row is non-zero on one rank only
            values = [getattr(part, name) for part in parts]
            return None if values[0] is None else torch.stack(values).sum(0)

        return PolicyScores(logp_old=total("logp_old"), logp_ref=total("logp_ref"), values=total("values"),
                            logp_old_source=parts[0].logp_old_source)

    def keep_version(self, version: int, keep: int) -> None:
        """`Learner.keep_version` on every rank (each scores its stale rows under its own copy)."""
        self._call("keep_version", version, keep)

    def update(self, batch: RolloutBatch, scores: PolicyScores, advantages: Advantages,
               generator: torch.Generator) -> dict[str, float]:
        """`Learner.update` on every rank from `generator`'s state, which then advances as one
        process's would; the replica takes the new weights. Returns the stats (all ranks')."""
        results = self._call("update", self._put(batch), scores, advantages, generator.get_state())
        stats, shuffle = results[0]
        generator.set_state(shuffle)
        self._pull_weights()
        return stats

    def state_dict(self) -> dict:
        """Rank 0's `Learner.state_dict` (every rank holds the same)."""
        return self._call("state_dict", ranks=[0])[0]

    def load_state_dict(self, state: dict, weights_dir: str | None = None) -> None:
        """`Learner.load_state_dict` on every rank (`weights_dir` must be readable on each node)."""
        self._call("load_state_dict", state, weights_dir)
        self._pull_weights()

    def save_checkpoint(self, root: Path, step: int, state: dict, **options: Any) -> Path:
        """`Learner.save_checkpoint`, written by rank 0 (`root` on its node: a shared filesystem
        across nodes). The same format as one Learner's: any number of ranks resumes from it."""
        return self._call("save_checkpoint", root, step, state, options, ranks=[0])[0]

    def close(self) -> None:
        """Stop the ranks and free their own placement (idempotent; shared bundles stay)."""
        for rank in self.ranks:
            ray.kill(rank)
        self.ranks = []
        if self.placement is not None:
            self.placement.close()
            self.placement = None


def uses_learner_group(cluster: ClusterConfig) -> bool:
    """The learner is Ray ranks: more than one, or colocated on Ray (rank 0 shares bundle 0 with
    rollout worker 0, so even one rank is an actor)."""
    return cluster.learner_workers > 1 or (cluster.colocate and cluster.uses_ray)


def make_learner(config: Config, model_path: str, device: torch.device, total_updates: int,
                 bundles: Bundles | None = None) -> Learner | LearnerGroup:
    """The run's learner: a `LearnerGroup` when `uses_learner_group` (its replica in host memory:
    the driver computes nothing with it, and on a GPU it would crowd a colocated pair), else this
    process's `Learner` on `device`."""
    if uses_learner_group(config.cluster):
        return LearnerGroup(config, model_path, torch.device("cpu"), total_updates, bundles)
    return Learner(config, model_path, device, total_updates)
