"""The `rlvr` command: one subcommand per stage, each also `python -m stages.<name>`."""

from __future__ import annotations

import importlib
import sys

from stages.catalog import CHAIN, STAGES

COMMANDS = {name: (stage.module, stage.summary) for name, stage in STAGES.items()}
COMMANDS["run"] = ("stages.run", "the whole chain: " + ", ".join(CHAIN))


def usage() -> str:
    lines = ["usage: rlvr STAGE [CONFIG.yaml] [section.key=value ...]", "", "stages:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `rlvr STAGE --help` for a stage's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in COMMANDS:
        sys.exit(f"rlvr: unknown stage {stage!r}\n\n{usage()}")
    module = importlib.import_module(COMMANDS[stage][0])
    module.main(rest)


if __name__ == "__main__":
    main()
