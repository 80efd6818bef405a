"""Past one process, on Ray (docs/design.md, "Scaling out"): the run's Ray runtime, the pool of
rollout workers that stands in for a `RolloutEngine`, the data-parallel learner ranks
(`pipeline.cluster.learner_group`), and colocation (`pipeline.cluster.colocate`: a worker and a
rank per GPU, the engine asleep during the update).

    runtime = RayRuntime.start(config.cluster)        # None: the single process, no Ray
    learner = make_learner(config, model_path, device, updates, runtime.bundles)
    engine = make_pool(config, model_path, policy=learner.model, bundles=runtime.bundles) if uses_pool(config.cluster) else make_engine(...)
"""

from pipeline.cluster.colocate import UpdateSleep, colocated_bundles
from pipeline.cluster.placement import Bundles
from pipeline.cluster.rollout_pool import (EngineSpec, RolloutPool, RolloutWorkerError, StaleWeights,
                                           make_pool, shard_groups, uses_pool)
from pipeline.cluster.runtime import RayRuntime

__all__ = ["Bundles", "EngineSpec", "RayRuntime", "RolloutPool", "RolloutWorkerError", "StaleWeights",
           "UpdateSleep", "colocated_bundles", "make_pool", "shard_groups", "uses_pool"]
