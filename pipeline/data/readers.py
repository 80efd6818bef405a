"""Where problem rows come from: a local .jsonl/.json/.parquet file or a Hugging Face hub dataset
(docs/design.md, "Layout").

    rows, unit = read_rows(Path("datasets/train.jsonl"))   # [(line number, row)], "line"
    rows = read_hub("openai/gsm8k:main", "train")           # [(row number, row)]

Mapping the rows' columns onto `Problem` is `pipeline/data/records.py`. Bad input raises
`DataError` naming the file and the 1-based line (or row).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pipeline.config import DataError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
HUB_TIMEOUT_S = 5.0
"""How long the hub may take to answer before a hub dataset counts as unreachable."""


def read_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """(line or row number, row) pairs and the unit ("line"/"row") used in messages."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        return list(enumerate(rows, 1)), "row"
    if path.suffix not in FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        numbered, unit = list(enumerate(rows, 1)), "row"
    else:
        numbered, unit = [], "line"
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
    for number, row in numbered:
        if not isinstance(row, dict):
            raise DataError(f"{path}, {unit} {number}: expected a JSON object, got {type(row).__name__}")
    return numbered, unit


def check_hub(name: str) -> None:
    """Raise DataError within HUB_TIMEOUT_S when the hub cannot be reached or has no dataset `name`.

    `datasets.load_dataset` retries an unreachable hub for about 30 s; this asks once. Nothing
    is asked in offline mode (HF_HUB_OFFLINE=1), where `datasets` reads its cache.
    """
    from huggingface_hub import HfApi, is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if is_offline_mode():
        return
    repo = name.partition(":")[0]
    try:
        HfApi().dataset_info(repo, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise DataError(f"{name!r} is neither a local file nor a dataset on the Hugging Face hub") from None
    except HfHubHTTPError:
        return  # reachable (gated, rate-limited, ...): load_dataset's own error says more
    except Exception as exc:  # noqa: BLE001 - any network failure (DNS, refused, timeout) means unreachable
        raise DataError(
            f"cannot reach the Hugging Face hub for {name!r} within {HUB_TIMEOUT_S:.0f} s ({type(exc).__name__}); "
            f"set HF_HUB_OFFLINE=1 to use a cached copy, or download it where the hub is reachable "
            f"and point the config at a local .jsonl or .parquet file"
        ) from None


def read_hub(name: str, split: str) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a hub dataset; `name:config` selects a configuration (e.g. `openai/gsm8k:main`)."""
    import datasets

    check_hub(name)
    repo, _, config = name.partition(":")
    try:
        rows = datasets.load_dataset(repo, config or None, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub failure gets the same advice
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"cannot load {name!r} (split {split!r}) from the Hugging Face hub "
            f"({type(exc).__name__}: {reason}); download it where the hub is reachable and point "
            f"data.train/data.test at a local .jsonl or .parquet file"
        ) from None
    return list(enumerate(rows, 1))


def is_local(spec: str) -> bool:
    """Whether `spec` names a local path rather than a hub dataset: it exists, ends in a data file's
    suffix, starts with `.`, `/` or `~`, or its first path component exists here (`datasets/train`)."""
    path = Path(spec).expanduser()
    first = Path(spec.split("/")[0]).expanduser()
    return (path.exists() or path.suffix in FILE_SUFFIXES or spec.startswith((".", "/", "~"))
            or (spec.split("/")[0] != "" and first.exists()))


def not_found(path: Path) -> str:
    """'data file not found: X' with the data files the user probably meant."""
    if path.is_dir():
        files = sorted(str(f) for f in path.iterdir() if f.suffix in FILE_SUFFIXES)
        return f"{path} is a folder, not a data file" + (f"; files in it: {', '.join(files[:5])}" if files else "")
    siblings = ([f for f in path.parent.iterdir() if f.suffix in FILE_SUFFIXES and f.is_file()]
                if path.parent.is_dir() else [])
    near = [f for f in siblings if f.stem == path.name or f.stem == path.stem]
    near = near or [path.parent / n for n in difflib.get_close_matches(path.name, [f.name for f in siblings], n=2)]
    hint = f" (did you mean {' or '.join(str(f) for f in near)}?)" if near else ""
    return f"data file not found: {path}{hint}"
