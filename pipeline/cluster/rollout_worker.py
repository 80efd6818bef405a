"""One rollout worker: a Ray actor that builds its own engine in its own process and serves one
weight version at a time (docs/design.md, "Scaling out"; the pool is `pipeline/cluster/rollout_pool.py`).

    worker = ray.remote(RolloutWorker).remote(EngineSpec(model_path, config.rollout), index)
    worker.load_weights.remote(payload_ref)              # answers with the version it now serves
    worker.generate.remote(prompts, sampling, version, [payload_ref])  # loads the payload first if needed

A worker asked to generate with any other version than the one it serves refuses (`StaleWeights`),
so no completion is ever sampled from other weights than those asked for at submission.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import ray
import torch

from pipeline.config import RolloutConfig
from pipeline.rollout.base import Completion, RolloutEngine, SamplingSettings
from pipeline.rollout.factory import make_engine
from pipeline.rollout.weights import WeightsPayload


class StaleWeights(RuntimeError):
    """A worker was asked to generate with a weight version it does not serve."""


class EngineBuilder(Protocol):
    """Builds a worker's engine inside the worker's process (picklable)."""

    def build(self, index: int) -> RolloutEngine:
        ...


@dataclass(frozen=True)
class EngineSpec:
    """A rollout worker's engine: `make_engine(rollout, model_path)` on `device`, serving the base
    weights until the first `load_weights`; worker `index` seeds with `seed + index`; `sleep_mode`:
    the engine can free its GPU memory between generations (`cluster.colocate`)."""

    model_path: str
    rollout: RolloutConfig
    device: str = "cpu"
    seed: int = 0
    sleep_mode: bool = False

    def build(self, index: int) -> RolloutEngine:
        torch.manual_seed(self.seed + index)  # the HF engine samples from torch's global generator
        return make_engine(self.rollout, self.model_path, device=self.device, seed=self.seed + index,
                           sleep_mode=self.sleep_mode)


class RolloutWorker:
    """One engine replica (a Ray actor's class; the pool wraps it in `ray.remote`)."""

    def __init__(self, builder: EngineBuilder, index: int) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per worker and restart, on the driver's console
        self.index = index
        self.engine = builder.build(index)
        self._finished: float | None = None  # when the last generation ended (time.time())

    def dtype(self) -> torch.dtype:
        """The dtype merged weights must have for this engine."""
        return self.engine.dtype

    def load_weights(self, payload: WeightsPayload) -> int:
        """Serve `payload` from now on; returns the version served (the acknowledgement)."""
        return self.engine.load_weights(payload)

    def version(self) -> int:
        return self.engine.version

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings, version: int,
                 carried: list[ray.ObjectRef] | None = None) -> tuple[list[list[Completion]], dict[str, float]]:
        """This worker's groups and {tokens, seconds, version, started, finished, idle} (wall-clock
        seconds of this process; idle: since its previous generation ended). `carried`: the
        reference of `version`'s payload (in a list, so Ray hands over the reference, not the
        tensors), loaded first when this worker serves another version. StaleWeights unless it
        then serves `version`."""
        if carried and self.engine.version != version:
            self.engine.load_weights(ray.get(carried[0]))
        if self.engine.version != version:
            raise StaleWeights(f"rollout worker {self.index} serves version {self.engine.version}, "
                               f"asked for {version}")
        started = time.time()
        groups = self.engine.generate(prompts, sampling)
        finished = time.time()
        idle = 0.0 if self._finished is None else started - self._finished
        self._finished = finished
        tokens = sum(len(c.token_ids) for group in groups for c in group)
        return groups, {"tokens": tokens, "seconds": finished - started, "version": self.engine.version,
                        "started": started, "finished": finished, "idle": idle}

    def prompt_logprobs(self, prompt_ids: list[int], completion_ids: list[int],
                        temperature: float = 1.0) -> list[float]:
        return self.engine.prompt_logprobs(prompt_ids, completion_ids, temperature)

    def sleep(self) -> None:
        """Free the engine's GPU memory until `wake_up` (colocated: the learner rank's turn)."""
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def close(self) -> None:
        self.engine.close()

