"""Folders built beside their final place and swapped in whole (docs/design.md, "Outputs: nothing lost silently")."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def staging_folder(target: Path) -> Path:
    """A new empty folder beside `target` to build it in, with the mode `mkdir` would give it
    (tempfile's 0700 would make finished checkpoints and models unreadable to other users)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    return staging
