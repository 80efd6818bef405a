"""Rewards entering training: what happens to a NaN or infinite reward (docs/rewards.md).

A non-finite reward would make every advantage of its group NaN (docs/algorithms.md §1) and one
update would turn the weights into NaN. `reward.non_finite` decides:

* `error` (default): `NonFiniteRewardError` naming the reward term and the sample (prompt and
  completion index within the step's batch), raised before any update;
* `mask`: the sample is marked invalid: left out of its group's mean and std, its loss-mask
  row cleared (the group keeps its G rows), and counted in the metrics (`reward/non_finite`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pipeline.data.problems import DataError

NonFinitePolicy = Literal["error", "mask"]


class NonFiniteRewardError(DataError):
    """A reward term returned NaN or inf (reported like bad data: one line, no traceback)."""


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def describe_sample(index: int, total: list[float], components: dict[str, list[Any]],
                    group_size: int) -> str:
    """Which term made sample `index`'s total non-finite, and where the sample sits."""
    where = f"prompt {index // group_size}, completion {index % group_size} of the step's batch"
    values = {name: column[index] for name, column in components.items()}
    bad = {name: v for name, v in values.items() if v is not None and not math.isfinite(v)}
    if bad:
        what = ", ".join(f"reward term {name!r} returned {v}" for name, v in bad.items())
    elif values and all(v is None for v in values.values()):
        what = "every reward term returned None (not applicable)"
    else:
        what = f"the weighted sum of the reward terms is {total[index]} (terms: {values})"
    return f"{what} for {where}"


def finite_samples(total: list[float], components: dict[str, list[Any]], group_size: int,
                   policy: NonFinitePolicy) -> list[bool]:
    """One flag per sample of a step's batch (ordered group by group): its total is finite.

    `total` and `components` are a `rewards.RewardResult`'s fields. With `policy="error"` a
    non-finite total raises `NonFiniteRewardError` naming the term and the first such sample.
    """
    valid = [_finite(value) for value in total]
    if policy == "error" and not all(valid):
        bad = valid.index(False)
        count = valid.count(False)
        raise NonFiniteRewardError(
            f"non-finite reward: {describe_sample(bad, total, components, group_size)}"
            f" ({count} such sample{'s' if count > 1 else ''} in the batch); fix the reward, or set"
            " reward.non_finite=mask to leave such samples out of training")
    return valid
