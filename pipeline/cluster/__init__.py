"""Past one process, on Ray (docs/design.md, "Scaling out"): the run's Ray runtime, the pool of
rollout workers that stands in for a `RolloutEngine`, the data-parallel learner ranks
(`pipeline.cluster.learner_group`), and colocation (`pipeline.cluster.colocate`: a worker and a
rank per GPU, the engine asleep during the update).

    runtime = RayRuntime.start(config)                # None when `config.uses_ray` is False: no Ray
    learner = make_learner(config, model_path, device, updates, runtime.bundles)
    engine = make_pool(config, model_path, policy=learner.model, bundles=runtime.bundles) if config.uses_pool else make_engine(...)
"""

from pipeline.cluster.colocate import UpdateSleep, colocated_bundles
from pipeline.cluster.placement import Bundles
from pipeline.cluster.rollout_pool import PoolHandle, RolloutPool, RolloutWorkerError, make_pool, shard_groups
from pipeline.cluster.rollout_worker import EngineSpec, StaleWeights
from pipeline.cluster.runtime import RayRuntime

__all__ = ["Bundles", "EngineSpec", "PoolHandle", "RayRuntime", "RolloutPool", "RolloutWorkerError", "StaleWeights",
           "UpdateSleep", "colocated_bundles", "make_pool", "shard_groups"]
