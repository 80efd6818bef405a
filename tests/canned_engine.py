"""A rollout engine with canned completions, for trainer tests that need no model to sample."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.rollout import Completion, EagerSubmit


class CannedEngine(EagerSubmit):
    """Completion j of every prompt is `text(j)` (token ids 100 + j, EOS), log-probs -1."""

    version = 0

    def __init__(self, text: Callable[[int], str] = lambda j: f"answer {j}"):
        self.text = text

    def generate(self, prompts, sampling):
        return [[Completion(p, [100 + j, 2], [-1.0, -1.0], self.text(j), "stop", self.version)
                 for j in range(sampling.n)] for p in prompts]

    def update_weights(self, model, version=None):
        self.version = self.version + 1 if version is None else version
        return self.version

    def close(self):
        pass
