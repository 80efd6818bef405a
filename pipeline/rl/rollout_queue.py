"""The rollout batches in flight (docs/design.md, "Asynchronous RL").

    queue = RolloutQueue(engine, stream, encode, sampling, max_staleness=k, last_version=steps - 1, events=log)
    rollout = queue.next(version)        # the oldest batch in flight within the staleness bound
    state = queue.state_dict()           # the prompt stream before the oldest batch not yet trained

`next(v)` first tops the queue up to `1 + max(0, min(k, last_version - v))` submissions, each drawn
from the prompt stream and submitted to the engine with the weights of version v
(`RolloutEngine.submit`), then collects the oldest. A draw after `last_version` (the final policy's
record) finds nothing submitted ahead for it and samples with its own version's weights. At k = 0 that is the synchronous step: submit with the current weights,
collect at once. At k > 0 the engine generates the next batches while the learner trains on this
one. Each draw pops one submission, so a batch submitted at version u is collected by version
u + k; one older than that (v - u > k) is dropped and its groups counted (`dropped`) all the same.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.data.problems import Problem
from pipeline.data.prompts import PromptStream
from pipeline.rl.events import EventLog
from pipeline.rollout import Completion, RolloutEngine, SamplingSettings


@dataclass
class Rollout:
    """One collected prompt batch."""

    batch: int
    """Its number in the run, counting submissions from 0 (a resumed run continues the count)."""
    problems: list[Problem]
    prompt_ids: list[list[int]]
    groups: list[list[Completion]]
    """`sampling.n` completions per prompt, in prompt order."""
    version: int
    """The policy version that sampled every completion."""
    seconds: float
    """How long the engine generated it."""


@dataclass
class _Submitted:
    batch: int
    version: int
    problems: list[Problem]
    prompt_ids: list[list[int]]
    stream: dict[str, int]
    """The prompt stream's state before this batch was drawn."""
    handle: Any


class RolloutQueue:
    """Submits prompt batches to `engine` ahead of the learner, at most `1 + max_staleness` in
    flight, and hands them out oldest first (see the module docstring)."""

    def __init__(self, engine: RolloutEngine, stream: PromptStream,
                 encode: Callable[[list[Problem]], list[list[int]]], sampling: SamplingSettings, *,
                 max_staleness: int, last_version: int, events: EventLog) -> None:
        """`encode`: problems -> prompt token ids; `last_version`: the last version that trains on a
        batch (rl.steps - 1): nothing is submitted ahead beyond it."""
        self.engine, self.stream, self.encode, self.sampling = engine, stream, encode, sampling
        self.max_staleness, self.last_version, self.events = max_staleness, last_version, events
        self.in_flight: deque[_Submitted] = deque()
        self.next_batch = 0
        self.dropped = 0
        """Groups dropped as too stale, over the run."""

    def next(self, version: int) -> Rollout:
        """The oldest batch in flight that version `version` may train on (after topping up). A
        rollout pool checks that each batch was sampled by the version it was submitted with."""
        while True:
            self._fill(version)
            item = self.in_flight.popleft()
            generation = self.engine.collect(item.handle)
            ids = {"batch": item.batch, "version": item.version}
            self.events.emit("generate_started", at=generation.started, **ids)
            self.events.emit("generate_finished", at=generation.finished, **ids)
            staleness = version - item.version
            if staleness > self.max_staleness:
                self.dropped += len(item.problems)
                self.events.emit("batch_dropped", **ids, step=version, staleness=staleness, groups=len(item.problems))
                continue
            self.events.emit("batch_collected", **ids, step=version, staleness=staleness)
            return Rollout(item.batch, item.problems, item.prompt_ids, generation.groups, item.version,
                           generation.finished - generation.started)

    def _fill(self, version: int) -> None:
        """Submit batches at `version` until `1 + max(0, min(max_staleness, last_version - version))` are in flight."""
        depth = 1 + max(0, min(self.max_staleness, self.last_version - version))
        while len(self.in_flight) < depth:
            stream = self.stream.state_dict()
            problems = self.stream.next_batch()
            prompt_ids = self.encode(problems)
            self.events.emit("generate_submitted", batch=self.next_batch, version=version,
                             epoch=stream["epoch"], position=stream["position"])
            handle = self.engine.submit(prompt_ids, self.sampling)
            self.in_flight.append(_Submitted(self.next_batch, version, problems, prompt_ids, stream, handle))
            self.next_batch += 1

    def state_dict(self) -> dict[str, Any]:
        """`stream`: the prompt stream's state before the oldest batch in flight was drawn (its
        state now when none is), `next_batch`: that batch's number. A run resumed from it draws the
        batches in flight again and generates them with its current weights: none is lost or
        trained twice."""
        if self.in_flight:
            return {"stream": dict(self.in_flight[0].stream), "next_batch": self.in_flight[0].batch}
        return {"stream": self.stream.state_dict(), "next_batch": self.next_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` (nothing may be in flight); `next_batch` defaults to 0."""
        if self.in_flight:
            raise RuntimeError("load_state_dict with batches in flight")
        self.stream.load_state_dict(state["stream"])
        self.next_batch = state.get("next_batch", 0)
