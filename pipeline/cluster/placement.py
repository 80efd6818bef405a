"""Placement by index (docs/design.md, "Scaling out"): actor i of each kind runs in bundle i.

    bundles = Bundles.place([{"CPU": 1, "GPU": 1}] * 4, timeout_s=60)   # None: not placed in time
    actor.options(scheduling_strategy=bundles.strategy(i))
    bundles.close()

The learner group places its ranks this way; with `cluster.colocate` one set of bundles holds a
rollout worker and a learner rank each (`pipeline.cluster.colocate`).
"""

from __future__ import annotations

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class Bundles:
    """A Ray placement group of `size` bundles (PACK: as few nodes as fit)."""

    def __init__(self, group: PlacementGroup, size: int) -> None:
        self.group: PlacementGroup | None = group
        self.size = size

    @classmethod
    def place(cls, bundles: list[dict[str, float]], timeout_s: float) -> Bundles | None:
        """Reserve `bundles` (Ray must be up) and wait until Ray placed them; None (and nothing
        reserved) when it could not within `timeout_s`."""
        group = placement_group(bundles, strategy="PACK")
        try:
            ray.get(group.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(group)
            return None
        return cls(group, len(bundles))

    def strategy(self, index: int) -> PlacementGroupSchedulingStrategy:
        """Run an actor in bundle `index` (it asks for part of that bundle's resources)."""
        if self.group is None or not 0 <= index < self.size:
            raise IndexError(f"bundle {index} of {self.size} ({'open' if self.group else 'closed'})")
        return PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=index)

    def close(self) -> None:
        """Free the bundles (idempotent); the actors in them should have ended."""
        if self.group is not None:
            remove_placement_group(self.group)
            self.group = None
