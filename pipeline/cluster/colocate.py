"""Colocation (docs/design.md, "Scaling out"): a rollout worker and a learner rank share each GPU.

    bundles = colocated_bundles(config.cluster)                    # RayRuntime.start does this
    group = make_learner(config, ..., bundles=bundles)             # learner rank i in bundle i
    pool = make_pool(config, ..., bundles=bundles)                 # rollout worker i in bundle i
    sleep = UpdateSleep(engine, config.cluster.colocate)           # the RL loop's one decision
    sleep.before_update(); learner.update(...); engine.update_weights(...); sleep.after_sync()

One Ray placement group holds one bundle per GPU, `{CPU: cpus_per_rollout_worker +
cpus_per_learner_worker, GPU: 1}` (without GPUs, the CPUs alone: the pair time-shares its cores).
Rollout worker i and learner rank i are both scheduled into bundle i, asking for their fractions
of it (`gpus_per_rollout_worker`, `gpus_per_learner_worker`: at most 1 together, e.g. 0.5 each, as
OpenRLHF's colocated actors do), so Ray puts both on the same GPU and nothing else on it. The
step is synchronous, so the two never compute at once: the engine sleeps (vLLM sleep mode: its
weights to host memory, its KV cache dropped) while the learner scores and updates, and wakes
before the next generation.
"""

from __future__ import annotations

import logging

import ray
import torch

from pipeline.cluster.placement import Bundles
from pipeline.config import ClusterConfig, ConfigError
from pipeline.rollout.base import RolloutEngine

log = logging.getLogger(__name__)


def colocated_bundle(cluster: ClusterConfig) -> dict[str, float]:
    """The resources of one pair's bundle: both sides' CPUs and one whole GPU (none without GPUs)."""
    bundle = {"CPU": cluster.cpus_per_rollout_worker + cluster.cpus_per_learner_worker}
    if cluster.gpus_per_rollout_worker > 0:
        bundle["GPU"] = 1.0
    return bundle


def colocated_bundles(cluster: ClusterConfig) -> Bundles:
    """Reserve one bundle per pair (Ray must be up). ConfigError when the Ray cluster has fewer
    CPUs or GPUs than the bundles need, or cannot place them (e.g. no node with one bundle's
    CPUs) within `cluster.collective_timeout_s`."""
    bundle, pairs = colocated_bundle(cluster), cluster.rollout_workers
    have = ray.cluster_resources()
    for unit, each in bundle.items():
        if pairs * each > have.get(unit, 0.0):
            raise ConfigError(f"cluster.colocate: {pairs} pairs x {each:g} {unit} need more than the Ray "
                              f"cluster's {have.get(unit, 0.0):g} {unit}s")
    bundles = Bundles.place([bundle] * pairs, cluster.collective_timeout_s)
    if bundles is None:
        raise ConfigError(f"cluster.colocate: Ray could not place {pairs} bundles of {bundle} within "
                          f"cluster.collective_timeout_s={cluster.collective_timeout_s:g}s "
                          f"(available: {ray.available_resources()})")
    log.info("colocated: %d bundles of %s", pairs, bundle)
    return bundles


def release_cached_memory() -> None:
    """Give the blocks PyTorch's caching allocator keeps after an update back to the GPU, so the
    engine waking on it can map its KV cache (nothing on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class UpdateSleep:
    """The RL loop's one colocation decision: with `colocate`, the engine sleeps from the end of a
    step's generation through the learner's score, update and the weight push (an engine loads
    pushed weights asleep: vLLM wakes its weights alone for that, `VLLMEngine.load_weights`), and
    wakes after the push, before the sync check and the next generation. Without, both calls do
    nothing, so an engine without `sleep`/`wake_up` serves a run that is not colocated."""

    def __init__(self, engine: RolloutEngine, colocate: bool) -> None:
        self.engine = engine if colocate else None

    def before_update(self) -> None:
        """After generation: hand the engine's GPU memory to the learner."""
        if self.engine is not None:
            self.engine.sleep()

    def after_sync(self) -> None:
        """After the new weights were pushed: the engine takes its memory back (this process's
        learner, in a single colocated process, first hands back what its allocator cached)."""
        if self.engine is not None:
            release_cached_memory()
            self.engine.wake_up()
