"""Every check that needs no model, run before a stage loads one (`run_stage`); `--dry-run` runs only these.

Each check raises ConfigError, DataError or ModelError with one line naming the key, file or line,
and returns lines for the dry run's summary. See docs/design.md.

One module per kind of check: paths, model, data, rewards, cluster.
"""

from __future__ import annotations

from pipeline.config import Config
from stages.catalog import CHAIN, COMMANDS
from stages.preflight.cluster import check_cluster, check_rl_mode
from stages.preflight.data import STAGE_CHECKS
from stages.preflight.model import check_adapter_rank, check_context, check_engine, check_model
from stages.preflight.paths import check_checkpoint, check_output_dir, check_output_paths
from stages.preflight.rewards import check_rewards

__all__ = ["check_adapter_rank", "check_checkpoint", "preflight"]


def preflight(config: Config, stage: str) -> list[str]:
    """Run every model-free check of `stage` (a catalog command); the dry run's summary lines.

    Raises ConfigError, DataError or ModelError (one line) at the first problem found.
    """
    stages = CHAIN if stage == "run" else (stage,)
    lines = check_output_dir(config) + check_output_paths(config, stage)
    if "model" in COMMANDS[stage].sections:
        lines += check_model(config) + check_context(config, stage)
    if "reward" in COMMANDS[stage].sections:
        lines += check_rewards(config, stage)
    if stage in ("rl", "run"):
        lines += check_engine(config) + check_cluster(config) + check_rl_mode(config)
    for name in stages:
        if name in STAGE_CHECKS:
            lines += STAGE_CHECKS[name](config)
    return list(dict.fromkeys(lines))
