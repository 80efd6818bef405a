"""The `rlvr` command: one subcommand per stage (stages/catalog.py), each also `python -m stages.<name>`."""

from __future__ import annotations

import importlib
import sys

from stages.catalog import COMMANDS


def usage() -> str:
    lines = ["usage: rlvr STAGE [CONFIG.yaml] [section.key=value ...] [--dry-run] [--print-config]", "", "stages:"]
    lines += [f"  {name:<14} {stage.summary}" for name, stage in COMMANDS.items()]
    lines += ["", "Run `rlvr STAGE --help` for a stage's config keys, their defaults and the files it writes."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in COMMANDS:
        sys.exit(f"rlvr: unknown stage {stage!r}\n\n{usage()}")
    importlib.import_module(COMMANDS[stage].module).main(rest)


if __name__ == "__main__":
    main()
