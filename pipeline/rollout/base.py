"""The rollout contract: sampling settings, completion records, and the engine protocol.

Log-probabilities, in every engine, are those of the distribution the token was drawn from:
`log_softmax(logits / T)` in float32, restricted to the top-k / top-p set and renormalised
when those are active (vLLM's `processed_logprobs`). With `top_k=-1, top_p=1` this is exactly
the learner's `pipeline.core.logprobs.token_logprobs(logits, ids, T)`. Greedy decoding (T = 0)
reports `log_softmax(logits)`, the T = 1 distribution, as the learner does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from pipeline.config import RolloutConfig

FinishReason = Literal["stop", "length"]
SyncMode = Literal["adapter", "merged"]


@dataclass
class SamplingSettings:
    """How to sample: `n` completions per prompt; `temperature == 0` decodes greedily."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    """-1 (or 0) keeps the whole vocabulary."""
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion; the completion keeps the tokens that produced one."""

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling settings: {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_config(cls, config: RolloutConfig, n: int) -> SamplingSettings:
        return cls(n=n, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                   max_tokens=config.max_tokens, stop=list(config.stop))


@dataclass
class Completion:
    """One sampled completion of a prompt, as token ids with the engine's log-probs."""

    prompt_ids: list[int]
    token_ids: list[int]
    """Includes the EOS token or the tokens that produced a stop string, if one ended it."""
    logprobs: list[float]
    """The engine's log-prob of each token in `token_ids` (see the module docstring)."""
    text: str
    """`token_ids` decoded with special tokens skipped."""
    finish_reason: FinishReason
    version: int = 0
    """The policy version whose weights sampled it (the engine's `version` when it generated)."""
    truncated: bool = field(init=False)
    """The completion hit `max_tokens` without ending (finish_reason == "length")."""

    def __post_init__(self) -> None:
        if len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"{len(self.logprobs)} logprobs for {len(self.token_ids)} tokens")
        self.truncated = self.finish_reason == "length"


@dataclass
class Generation:
    """A finished generation request (`RolloutEngine.collect`): the groups, the weight version that
    sampled all of them, and when the engine ran it (wall-clock `time.time()` seconds, taken where
    the engine runs; docs/design.md, "Asynchronous RL")."""

    groups: list[list[Completion]]
    version: int
    started: float
    finished: float


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples groups of completions from the current policy weights."""

    version: int
    """The weight version being served: 0 at start; the trainer names each new one (the policy
    after s updates is version s), else +1 per `update_weights`."""

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt (token ids), in prompt order."""
        ...

    def submit(self, prompts: list[list[int]], sampling: SamplingSettings) -> object:
        """Start `generate` with the version served now; returns a handle for `collect`. An engine
        in this process generates at once (`EagerSubmit`); a rollout pool returns while its
        workers generate (docs/design.md, "Asynchronous RL")."""
        ...

    def collect(self, handle: object) -> Generation:
        """The finished generation `submit` started (waits for it)."""
        ...

    def update_weights(self, model, version: int | None = None) -> int:
        """Serve the learner's current weights from now on as `version` (None: the served version
        + 1); returns the version served."""
        ...

    def prompt_logprobs(self, prompt_ids: list[int], completion_ids: list[int],
                        temperature: float = 1.0) -> list[float]:
        """The engine's log-probs of a fixed completion after `prompt_ids` (the sync check)."""
        ...

    def sleep(self) -> None:
        """Free the engine's GPU memory until `wake_up`; pushed weights still load (colocation,
        docs/design.md "Scaling out"). Called only when `cluster.colocate`; may do nothing."""
        ...

    def wake_up(self) -> None:
        """Take the memory back, ready to generate."""
        ...

    def close(self) -> None:
        """Release the engine's processes, memory and files."""
        ...


class EagerSubmit:
    """`submit`/`collect` for an engine in the trainer's process: `submit` generates at once, so the
    one loop of docs/design.md ("Asynchronous RL") runs it too (always on the current weights)."""

    version: int

    def submit(self, prompts: list[list[int]], sampling: SamplingSettings) -> Generation:
        started = time.time()
        groups = self.generate(prompts, sampling)  # type: ignore[attr-defined]
        return Generation(groups, self.version, started, time.time())

    def collect(self, handle: Generation) -> Generation:
        return handle
