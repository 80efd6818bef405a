"""`rl/events.jsonl`: what happened when in an RL run (docs/design.md, "Asynchronous RL").

One JSON object per line, `{"time": <wall-clock seconds>, "event": <name>, ...}`, written by the
trainer's process in the order it learns of each event. Generation start and finish times are the
engine's own (a rollout worker reports them with its groups, so they are written when the batch is
collected): sort by `time` for the order in which things happened. The events:

    generate_submitted  batch, version, epoch, position   (the prompt stream before the batch was drawn)
    generate_started    batch, version                    (the engine's clock)
    generate_finished   batch, version
    batch_collected     batch, version, step, staleness   (step: the learner's version when collected)
    batch_dropped       batch, version, step, staleness, groups   (older than rl.max_staleness)
    update_started      step, batches                     (the batches whose groups the update trains)
    update_finished     step
    weights_published   version, eager                    (eager: every worker acknowledged it)
    resumed             step
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"


class EventLog:
    """Appends events to `<folder>/events.jsonl`; a fresh run starts the file anew, a resumed one
    appends to it."""

    def __init__(self, folder: str | Path, resume: bool = False) -> None:
        self.path = Path(folder) / EVENTS_FILE
        if not resume:
            self.path.unlink(missing_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def emit(self, event: str, at: float | None = None, **fields: Any) -> None:
        """Write `event` with `fields` at wall-clock time `at` (None: now)."""
        self._file.write(json.dumps({"time": time.time() if at is None else at, "event": event, **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(folder: str | Path) -> list[dict[str, Any]]:
    """The events of `<folder>/events.jsonl`, in the order they happened (by `time`; ties keep the
    order written)."""
    path = Path(folder) / EVENTS_FILE
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(events, key=lambda e: e["time"])
