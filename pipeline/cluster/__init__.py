"""Past one process, on Ray (docs/design.md, "Scaling out"): the run's Ray runtime and the pool of
rollout workers that stands in for a `RolloutEngine`; the data-parallel learner ranks are
`pipeline.cluster.learner_group.LearnerGroup`.

    runtime = RayRuntime.start(config)                # None: the single process, no Ray
    engine = make_pool(config, model_path, policy=policy) if config.uses_pool else make_engine(...)
"""

from pipeline.cluster.rollout_pool import (EngineSpec, PoolHandle, RolloutPool, RolloutWorkerError, StaleWeights,
                                           make_pool, shard_groups)
from pipeline.cluster.runtime import RayRuntime

__all__ = ["EngineSpec", "PoolHandle", "RayRuntime", "RolloutPool", "RolloutWorkerError", "StaleWeights",
           "make_pool", "shard_groups"]
