"""Ray for one run (docs/design.md, "Scaling out"): join a cluster or start a private one.

    ray_runtime = RayRuntime.start(config)           # None when `config.uses_ray` is False: no Ray
    ray_runtime.bundles                              # with cluster.colocate: one bundle per pair
    ...
    ray_runtime.close()                              # undoes only what `start` did

`cluster.address`: unset (a worker count above 1) or `local` starts a private Ray on this machine,
sized to the workers asked for; `auto` joins the cluster `ray start` made here; `ray://host:port`
(Ray Client) or `host:port` (a GCS address) joins that one. A process that already has Ray up
(the test session, a notebook) is joined as it is, and left running. With `cluster.colocate` the
run's colocated bundles (`pipeline.cluster.colocate.colocated_bundles`) are reserved here, before
any actor starts, and freed on `close`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

from pipeline.cluster.colocate import colocated_bundles
from pipeline.cluster.placement import Bundles
from pipeline.config import ClusterConfig, Config

log = logging.getLogger(__name__)


def private_cpus(cluster: ClusterConfig) -> int:
    """Logical CPUs of a private local Ray: this machine's cores, or more when the workers asked
    for more (Ray schedules on logical CPUs; an actor that cannot be placed would wait forever)."""
    wanted = (cluster.rollout_workers * cluster.cpus_per_rollout_worker
              + cluster.learner_workers * cluster.cpus_per_learner_worker)
    cores = os.cpu_count() or 1
    if wanted > cores:
        log.warning("ray: the workers ask for %g CPUs, this machine has %d: they share its cores", wanted, cores)
    return max(cores, int(-(-wanted // 1)))


@contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Keep the process's SIGTERM handler across `ray.init`, which installs a crash reporter in its
    place (a stack dump, then abort: exit 134). The stage's own handler (stages/common.py
    `run_stage`) stops the run with one line and shuts Ray down on the way out."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


@dataclass
class RayRuntime:
    """The Ray this run uses; `owned`: this run connected it (and `close` disconnects it,
    stopping the private Ray if `start` launched one)."""

    address: str
    """The cluster's GCS address (`host:port`), which other processes can join."""
    owned: bool
    bundles: Bundles | None = None
    """With `cluster.colocate`: the bundles rollout worker i and learner rank i share."""

    @classmethod
    def start(cls, config: Config) -> RayRuntime | None:
        """Ray as `config.cluster` asks for, or None when the run needs none (`Config.uses_ray`).
        ConfigError when colocated bundles do not fit the cluster (`colocated_bundles`)."""
        if not config.uses_ray:
            return None
        cluster = config.cluster
        if ray.is_initialized():
            runtime = cls(ray.get_runtime_context().gcs_address, owned=False)
        else:
            quiet = dict(logging_level=logging.WARNING, include_dashboard=False)
            with _sigterm_kept():
                if cluster.address in (None, "local"):
                    ray.init(address="local", num_cpus=private_cpus(cluster), **quiet)
                else:
                    ray.init(address=cluster.address, **quiet)
            runtime = cls(ray.get_runtime_context().gcs_address, owned=True)
            log.info("ray: %s (%s)", runtime.address, "private" if cluster.address in (None, "local") else "joined")
        if cluster.colocate:
            try:
                runtime.bundles = colocated_bundles(cluster)
            except Exception:
                runtime.close()
                raise
        return runtime

    def close(self) -> None:
        """Free the colocated bundles; disconnect (and stop a private Ray) if this run connected."""
        if self.bundles is not None:
            self.bundles.close()
            self.bundles = None
        if self.owned and ray.is_initialized():
            ray.shutdown()
        self.owned = False
